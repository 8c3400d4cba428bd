"""Quantization with torchao: the policy (matching, validation), the written run (float
weights + policy, quantized at load), closeness to the float model and bytes in memory."""
import copy
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import anyformer as af
from anyformer import catalog
from anyformer.compress import quantize
from anyformer.compress.data import judged
from anyformer.compress.job import compress
from anyformer.errors import ConfigError
from anyformer.nn.quantization import apply_quantization, is_quantized, linear_layers, plan, storage_bytes
from anyformer.rundir import read_config
from tests.infer.helpers import train_tiny


CPU = torch.device("cpu")
FFN0 = "stack.blocks.0.sublayers.1.*"
POLICY = {"default": "int8-dynamic", "layers": {"head.*": "fp32", FFN0: "int8-weight"}}


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    """A vit at dim 64 trained on digits long enough to score well above chance (~70%)."""
    return train_tiny({"name": "digits"}, tmp_path_factory.mktemp("quantize") / "vit", model="vit",
                      **{"model.dim": 64, "train.steps": 150, "train.eval_every": 150, "train.batch_size": 32, "train.lr": 0.004})


@pytest.fixture(scope="module")
def quantized_run(vit_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("quantized") / "out"
    return out, compress(vit_run, "quantize", out, policy=POLICY, device="cpu", compiled=False)


def scheme_of(weight: torch.Tensor) -> str:
    if not is_quantized(weight):
        return "fp32"
    return "int8-dynamic" if weight.act_quant_kwargs is not None else "int8-weight"


def test_the_run_stores_float_weights_and_reloads_quantized_per_policy(vit_run, quantized_run):
    out, result = quantized_run
    config, original = read_config(out), read_config(vit_run)
    assert config["quantization"] == POLICY and config["model"] == original["model"]
    assert config["compressed"]["method"] == "quantize"
    # On disk: the input's float weights, unchanged.
    assert load_file(out / "model.safetensors").keys() == load_file(vit_run / "model.safetensors").keys()
    assert all(torch.equal(a, load_file(vit_run / "model.safetensors")[k]) for k, a in load_file(out / "model.safetensors").items())
    model, _ = catalog.load_run(out)
    got = {name: scheme_of(layer.weight) for name, layer in linear_layers(model).items()}
    assert got["head.fc"] == "fp32"
    assert got["stack.blocks.0.sublayers.1.fn.fc1"] == got["stack.blocks.0.sublayers.1.fn.fc2"] == "int8-weight"
    assert got["stack.blocks.0.sublayers.0.fn.q_proj"] == got["stack.blocks.0.sublayers.0.fn.o_proj"] == "int8-dynamic"
    assert got == result["notes"]["layers"]
    # Quantizing the same float weights again gives the same int data and scales.
    again, _ = catalog.load_run(out)
    w, v = model.stack.blocks[0].part("ffn").fc1.weight, again.stack.blocks[0].part("ffn").fc1.weight
    assert torch.equal(w.qdata, v.qdata) and torch.equal(w.scale, v.scale)


def test_outputs_and_accuracy_stay_close_to_the_float_run(vit_run, quantized_run):
    out, result = quantized_run
    float_model, config = catalog.load_run(vit_run)
    model, _ = catalog.load_run(out)
    x = judged(config, vit_run, float_model, CPU).example.inputs
    with torch.no_grad():
        ref, got = float_model(x), model(x)
    assert (got - ref).abs().max() <= 0.05 * ref.abs().max()
    assert result["before"]["accuracy"] > 0.5
    assert abs(result["after"]["accuracy"] - result["before"]["accuracy"]) <= 0.03


def test_notes_give_bytes_in_memory_and_eager_latencies(quantized_run):
    notes = quantized_run[1]["notes"]
    b = notes["bytes"]
    assert 0.25 < b["weights_ratio"] <= 0.3 and b["quantized_weights"] < b["float_weights"]
    assert b["model_quantized"] < b["model_float"]
    assert notes["eager_ms"]["float"] > 0 and notes["eager_ms"]["quantized"] > 0
    assert notes["speedup_eager"] == pytest.approx(notes["eager_ms"]["float"] / notes["eager_ms"]["quantized"])
    assert "compiled_ms" not in notes and "quantization" not in notes  # the job moved the policy to config.yaml


def test_int8_weight_only_takes_under_a_third_of_the_float_bytes(vit_run, tmp_path):
    result = compress(vit_run, "quantize", tmp_path / "w8", policy="int8-weight", device="cpu", compiled=False)
    b = result["notes"]["bytes"]
    model, _ = catalog.load_run(vit_run)
    weights = sum(layer.weight.numel() * 4 for layer in linear_layers(model).values())
    assert b["float_weights"] == weights
    assert b["quantized_weights"] <= 0.3 * weights  # int8: a quarter, plus a scale and zero point per row
    reloaded, _ = catalog.load_run(tmp_path / "w8")
    assert set(scheme_of(layer.weight) for layer in linear_layers(reloaded).values()) == {"int8-weight"}
    assert sum(storage_bytes(layer.weight) for layer in linear_layers(reloaded).values()) == b["quantized_weights"]


@pytest.mark.parametrize("policy, says", [
    ({"default": "int3"}, "unknown quantization scheme (policy default) 'int3'"),
    ({"layers": {"head.*": "int7"}}, "policy layer 'head.*'"),
    ({"layers": {"decoder.*": "fp32"}}, "pattern 'decoder.*' matches no linear layer of the model; its linear layers: stack.blocks.0"),
    ({"defaults": "fp32"}, "unknown key 'defaults'; valid: default, layers"),
    ("int4-weight", "int4-weight runs on CUDA only"),
    ("policy.yaml", "--policy 'policy.yaml' does not exist"),
    ("int9", "is neither a scheme nor a policy file"),
])
def test_bad_policies_are_one_line_and_write_nothing(vit_run, tmp_path, policy, says):
    with pytest.raises(ConfigError) as err:
        compress(vit_run, "quantize", tmp_path / "out", policy=policy, device="cpu", compiled=False)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_policy_comes_from_yaml_first_match_winning(tmp_path):
    (tmp_path / "p.yaml").write_text("default: int8-weight\nlayers:\n  'head.*': fp32\n  '*fc1': int8-dynamic\n  '*': fp32\n")
    policy = quantize.read_policy(str(tmp_path / "p.yaml"))
    assert policy == {"default": "int8-weight", "layers": {"head.*": "fp32", "*fc1": "int8-dynamic", "*": "fp32"}}
    assert quantize.read_policy("{default: int8-dynamic}") == {"default": "int8-dynamic", "layers": {}}
    assert quantize.read_policy(None) == {"default": "int8-dynamic", "layers": {}}
    model = af.create("vit", dim=32, depth=2, heads=2)
    layers = plan(model, policy)
    assert layers["head.fc"] == "fp32"
    assert [n for n, s in layers.items() if s != "fp32"] == ["stack.blocks.0.sublayers.1.fn.fc1", "stack.blocks.1.sublayers.1.fn.fc1"]


@pytest.mark.parametrize("preset, options, vocab", [
    ("gpt", {"vocab_size": 64}, 64),                                       # head tied to the embedding
    ("transformer", {"head": {"name": "multilayer", "num_classes": 3}}, 256),  # nn.MultiheadAttention inside
    ("bert", {}, 256),
])
def test_every_linear_layer_of_a_model_quantizes_and_stays_close(preset, options, vocab):
    torch.manual_seed(0)
    model = af.create(preset, dim=64, depth=2, heads=2, **options).eval()
    quantized = copy.deepcopy(model)
    layers = apply_quantization(quantized, {"default": "int8-dynamic"})
    assert set(layers.values()) == {"int8-dynamic"}
    assert all(is_quantized(layer.weight) for layer in linear_layers(quantized).values())
    x = torch.randint(0, vocab, (4, 16))
    with torch.no_grad():
        ref, got = model(x), quantized(x)
    assert (got - ref).abs().max() <= 0.05 * ref.abs().max()


def test_without_torchao_a_quantizing_policy_says_how_to_install_it(monkeypatch):
    model = af.create("vit", dim=32, depth=1, heads=2)
    monkeypatch.setitem(sys.modules, "torchao", None)
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    assert set(apply_quantization(model, {"default": "fp32"}).values()) == {"fp32"}  # nothing to quantize: no torchao
    with pytest.raises(ConfigError, match=r"pip install anyformer\[compress\]"):
        apply_quantization(model, {"default": "int8-weight"})


def test_compiled_timings_are_reported_beside_eager(vit_run, monkeypatch):
    # torch.compile itself takes tens of seconds on a CPU; benchmarks/compress_quantize.py runs it.
    monkeypatch.setattr(torch, "compile", lambda model: model)
    model, config = catalog.load_run(vit_run)
    quantized = copy.deepcopy(model)
    apply_quantization(quantized, {"default": "int8-dynamic"})
    notes = quantize.timings(model, quantized, judged(config, vit_run, model, CPU), CPU, compiled=True)
    assert set(notes["compiled_ms"]) == set(notes["compile_s"]) == {"float", "quantized"}
    assert all(v > 0 for v in notes["compiled_ms"].values()) and all(v >= 0 for v in notes["compile_s"].values())
    assert notes["speedup_compiled"] == pytest.approx(notes["compiled_ms"]["float"] / notes["compiled_ms"]["quantized"])


def test_a_quantized_run_is_refused_by_export_naming_its_float_run(vit_run, quantized_run, tmp_path):
    from anyformer.interop.hf.convert import export_hf
    from anyformer.interop.onnx import export_onnx
    out, _ = quantized_run
    for export in (lambda: export_hf(out, tmp_path / "hf"), lambda: export_onnx(out, tmp_path / "m.onnx")):
        with pytest.raises(ConfigError) as err:
            export()
        assert "is quantized" in str(err.value) and str(Path(vit_run).resolve()) in str(err.value)
    assert not (tmp_path / "hf").exists() and not (tmp_path / "m.onnx").exists()
