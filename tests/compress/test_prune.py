"""Structured pruning of heads and FFN units: the model shrinks by exactly the pruned
weights, equals the unpruned model with those heads / units masked, reloads from the
written run, ranks a planted useless head / unit first, and refuses bad options in one line."""
import contextlib
import copy
import hashlib
from pathlib import Path

import pytest
import torch

from anyformer import catalog, registry
from anyformer.compress import compress, prune
from anyformer.compress.data import Judged, judged
from anyformer.compress.prune_heads import Objective, head_importance, head_scale, head_units, scaled_input
from anyformer.errors import ConfigError
from anyformer.rundir import read_config, read_json
from tests.infer.helpers import train_tiny

CPU = torch.device("cpu")
DIM, HEADS, HD = 32, 4, 8
PER_HEAD = 4 * DIM * HD + 3 * HD  # q/k/v rows (weights + biases) and o_proj columns of one head


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    return train_tiny({"name": "digits"}, tmp_path_factory.mktemp("prune") / "vit", model="vit",
                      **{"model.depth": 2, "model.heads": HEADS})


@pytest.fixture(scope="module")
def glu_run(tmp_path_factory):
    return train_tiny({"name": "digits"}, tmp_path_factory.mktemp("prune") / "glu", model="vit",
                      **{"model.depth": 2, "model.heads": HEADS, "model.ffn": {"name": "glu", "variant": "swiglu"}})


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    task = {"name": "copy", "length": 6, "symbols": 4, "num_train": 64, "num_val": 8, "num_test": 16}
    return train_tiny(task, tmp_path_factory.mktemp("prune") / "gpt", model="gpt", **{"model.depth": 2, "model.heads": HEADS})


def loaded(run):
    model, config = catalog.load_run(run)
    return model, config, judged(config, run, model, CPU)


def masked_heads(model, pruned: dict[str, list[int]]):
    """Hooks zeroing the pruned heads' slices of each layer's o_proj input."""
    for key, heads in pruned.items():
        mixer = model.stack.block_at(int(key)).part("mixer")
        yield scaled_input(mixer.heads_output(), head_scale(mixer, heads))


def contextlib_all(managers) -> contextlib.ExitStack:
    """One context entering every manager of `managers`."""
    stack = contextlib.ExitStack()
    for m in managers:
        stack.enter_context(m)
    return stack


def inputs_of(data):
    return data.example.inputs, ({"mask": data.example.mask} if data.example.mask is not None else {})


@pytest.mark.parametrize("name", ["vit_run", "gpt_run"])
def test_one_head_per_layer_goes_exactly_and_equals_masking_it(name, request, tmp_path):
    run = request.getfixturevalue(name)
    model, config, data = loaded(run)
    before = n_params(model)
    pruned, new_config, notes = prune.apply(model, config["model"], data, CPU, heads=1)
    assert n_params(pruned) == before - 2 * PER_HEAD
    assert notes["heads_per_layer"] == {"0": 3, "1": 3}
    for key, gone in notes["heads"]["pruned"].items():  # the least important head of each layer
        scores = notes["heads"]["importance"][key]
        assert len(gone) == 1 and scores[gone[0]] == min(scores)
    overrides = new_config["schedule"]["overrides"]
    assert [(o["layers"], o["mixer"]["heads"], o["mixer"]["head_dim"]) for o in overrides] == [([0], 3, HD), ([1], 3, HD)]
    reference, _, _ = loaded(run)
    x, kw = inputs_of(data)
    with torch.no_grad():
        with contextlib_all(masked_heads(reference, notes["heads"]["pruned"])):
            want = reference(x, **kw)
        got = pruned(x, **kw)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    rebuilt = catalog.create(new_config)  # the config builds exactly the pruned shapes
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, **kw), got, atol=0, rtol=0)


def test_the_job_writes_a_smaller_run_that_reloads_and_leaves_the_input_alone(vit_run, tmp_path):
    before = digest(vit_run)
    result = compress(vit_run, "prune", tmp_path / "out", device="cpu", heads_fraction=0.25, neurons_fraction=0.5)
    assert digest(vit_run) == before
    model, _ = catalog.load_run(tmp_path / "out")
    heads = result["notes"]["heads_per_layer"]
    assert sum(heads.values()) == 6 and all(1 <= h <= 3 for h in heads.values())  # 2 of 8 heads, over the whole model
    assert {str(i): model.stack.block_at(i).part("mixer").heads for i in range(2)} == heads
    assert [model.stack.block_at(i).part("ffn").fc1.out_features for i in range(2)] == [64, 64]
    removed = (8 - 6) * PER_HEAD + 2 * 64 * (2 * DIM + 1)  # heads, and 64 units of fc1 (rows + bias) and fc2 (columns)
    assert result["before"]["parameters"] - result["after"]["parameters"] == removed == n_params(catalog.load_run(vit_run)[0]) - n_params(model)
    assert read_config(tmp_path / "out")["compressed"]["method"] == "prune"
    assert read_json(tmp_path / "out" / "compress.json")["notes"]["neurons"]["criterion"] == "magnitude"


@pytest.mark.parametrize("run_name, criterion", [("vit_run", "magnitude"), ("vit_run", "activation"), ("glu_run", "activation")])
def test_pruned_units_equal_masked_units(run_name, criterion, request):
    run = request.getfixturevalue(run_name)
    model, config, data = loaded(run)
    ffn0 = model.stack.blocks[0].part("ffn")
    ins, out = ffn0.hidden_linears()
    hidden, before = out.in_features, n_params(model)
    pruned, new_config, notes = prune.apply(model, config["model"], data, CPU, neurons_fraction=0.25, neurons_criterion=criterion)
    kept = len(notes["neurons"]["kept"]["0.ffn"])
    assert kept == hidden - hidden // 4 == notes["hidden_per_layer"]["0"]
    per_unit = sum(linear.in_features + (linear.bias is not None) for linear in ins) + DIM  # rows in (gate and up), column out
    assert n_params(pruned) == before - 2 * (hidden - kept) * per_unit
    assert [o["ffn"]["hidden"] for o in new_config["schedule"]["overrides"]] == [kept, kept]
    reference, _, _ = loaded(run)
    x, kw = inputs_of(data)
    with torch.no_grad(), contextlib_all(
            scaled_input(reference.stack.blocks[b].part("ffn").hidden_linears()[1],
                         torch.isin(torch.arange(hidden), torch.tensor(notes["neurons"]["kept"][f"{b}.ffn"])).float())
            for b in range(2)):
        want = reference(x, **kw)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x, **kw), want, atol=1e-5, rtol=0)
    rebuilt = catalog.create(new_config)
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)


def test_a_planted_useless_head_is_pruned_first(vit_run):
    model, config, data = loaded(vit_run)
    mixer = model.stack.blocks[1].part("mixer")
    with torch.no_grad():
        mixer.o_proj.weight[:, 2 * HD: 3 * HD] = 0.0  # head 2 of layer 1 writes nothing
    # Judged by closeness to the unpruned outputs (a run with no task), every head that
    # writes something raises the loss, and the silent one raises it by exactly 0.
    cosine = Judged(data.calibration, data.example, "cosine", True)
    _, scores = head_importance(head_units(model.stack, {0: [0], 1: [1]}), model, Objective(model, cosine, CPU))
    assert scores[1][2] == pytest.approx(0.0, abs=1e-7)
    assert min(s for b in scores for h, s in enumerate(scores[b]) if (b, h) != (1, 2)) > 1e-5
    # Under the task loss, masking it changes nothing either.
    _, task_scores = head_importance(head_units(model.stack, {1: [1]}), model, Objective(model, data, CPU))
    assert task_scores[1][2] == pytest.approx(0.0, abs=1e-6)
    _, _, notes = prune.apply(model, config["model"], cosine, CPU, heads_fraction=0.125)
    assert notes["heads"]["pruned"] == {"0": [], "1": [2]} and notes["heads_per_layer"] == {"0": 4, "1": 3}
    assert notes["pruned_loss"] == pytest.approx(0.0, abs=1e-6)  # removing it changed nothing


@pytest.mark.parametrize("criterion", ["magnitude", "activation"])
def test_a_planted_dead_unit_is_pruned_first(vit_run, criterion):
    model, config, data = loaded(vit_run)
    ffn = model.stack.blocks[0].part("ffn")
    with torch.no_grad():  # unit 5 of layer 0: no weights in or out, activation gelu(0) = 0
        ffn.fc1.weight[5], ffn.fc1.bias[5], ffn.fc2.weight[:, 5] = 0.0, 0.0, 0.0
    _, _, notes = prune.apply(model, config["model"], data, CPU, neurons_fraction=1 / 128, neurons_criterion=criterion)
    assert notes["neurons"]["importance"]["0.ffn"][5] == 0.0 < min(s for i, s in enumerate(notes["neurons"]["importance"]["0.ffn"]) if i != 5)
    assert 5 not in notes["neurons"]["kept"]["0.ffn"] and len(notes["neurons"]["kept"]["0.ffn"]) == 127


def test_finetuning_after_pruning_lowers_the_calibration_loss(vit_run):
    model, config, data = loaded(vit_run)
    _, _, notes = prune.apply(model, config["model"], data, CPU, heads=2, finetune_steps=8, finetune_lr=3e-3)
    tune = notes["finetune"]
    assert tune["steps"] == 8 and tune["loss_before"] == notes["pruned_loss"] and tune["loss_after"] < tune["loss_before"]
    assert not model.training


def test_an_override_sets_a_layers_heads_and_checks_them():
    model = catalog.create("vit", dim=DIM, depth=2, heads=HEADS, num_classes=10, image_size=8,
                           schedule={"overrides": [{"layers": [1], "mixer": {"name": "softmax", "heads": 2, "head_dim": HD}}]})
    mixers = [model.stack.block_at(i).part("mixer") for i in range(2)]
    assert [(m.heads, m.head_dim, tuple(m.q_proj.weight.shape)) for m in mixers] == [(4, 8, (32, 32)), (2, 8, (16, 32))]
    with pytest.raises(ConfigError, match=r"model.schedule.overrides\[0\].mixer.heads must be an integer >= 1, got 0"):
        catalog.create("vit", dim=DIM, heads=HEADS, schedule={"overrides": [{"layers": [1], "mixer": {"name": "softmax", "heads": 0}}]})
    with pytest.raises(ConfigError, match="model.mixer: mixer 'softmax' has no option 'heads'"):
        catalog.create("vit", mixer={"name": "softmax", "heads": 2})


@pytest.mark.parametrize("options, says", [
    ({"heads": 4}, "--heads 4 prunes every head of layers [[0], [1]] (they have 4); give --heads in 1..3"),
    ({"heads": 0}, "--heads must be an integer >= 1"),
    ({"heads_fraction": 1.0}, "--heads-fraction must be in (0, 1)"),
    ({"heads_fraction": 0.05}, "--heads-fraction 0.05 prunes 0 of the 8 heads; give --heads-fraction in [0.125, 1)"),
    ({"heads_fraction": 0.9}, "each of the 2 layers keeps one; give --heads-fraction in (0, 0.75]"),
    ({"heads": 1, "heads_fraction": 0.5}, "give one of --heads"),
    ({"neurons_fraction": 0.0}, "--neurons-fraction must be in (0, 1)"),
    ({"neurons_fraction": 0.001}, "give --neurons-fraction in [0.0078"),
    ({"neurons_fraction": 0.5, "neurons_criterion": "size"}, "unknown --neurons-criterion 'size'"),
    ({}, "prune needs --heads N"),
    ({"heads": 1, "finetune_steps": -1}, "--finetune-steps must be an integer >= 0"),
])
def test_bad_options_are_one_line_and_write_nothing(vit_run, tmp_path, options, says):
    before = digest(vit_run)
    with pytest.raises(ConfigError) as err:
        compress(vit_run, "prune", tmp_path / "out", device="cpu", **options)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out" / "model.safetensors").exists() and digest(vit_run) == before


@pytest.mark.parametrize("model_change, says", [
    ({"mixer": {"name": "fnet"}}, "--heads: no layer's mixer can lose heads (mixers 'fnet' (layers [0]), 'fnet' (layers [1])); mixers that can: softmax"),
    ({"mixer": {"name": "softmax", "kv_heads": 2}}, "head pruning supports multi-head attention only (kv_heads == heads)"),
    ({"position": {"name": "alibi"}}, "ALiBi slopes"),
])
def test_heads_that_cannot_go_exactly_are_refused(vit_run, model_change, says):
    _, config, data = loaded(vit_run)
    model_cfg = {**copy.deepcopy(config["model"]), **model_change}
    model = catalog.create(model_cfg)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as err:
        prune.apply(model, model_cfg, data, CPU, heads=1)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # untouched


def test_an_ffn_without_the_capability_is_refused(vit_run):
    _, config, data = loaded(vit_run)
    model_cfg = {**copy.deepcopy(config["model"]), "ffn": {"name": "kan"}}
    with pytest.raises(ConfigError, match=r"no layer's ffn can lose hidden units \(ffns 'kan'.*ffns that can: glu, mlp"):
        prune.apply(catalog.create(model_cfg), model_cfg, data, CPU, neurons_fraction=0.5)


def test_a_run_with_no_task_is_pruned_by_closeness_to_its_outputs(tmp_path):
    import transformers as T
    from anyformer.interop.hf.convert import import_hf
    hf = T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=256, n_positions=256))
    hf.save_pretrained(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "run")
    sentences = Path(__file__).with_name("sentences.txt")
    result = compress(tmp_path / "run", "prune", tmp_path / "out", data=str(sentences), device="cpu", heads=1, neurons_fraction=0.5)
    assert result["notes"]["loss"] == "1 - cosine to the unpruned outputs"
    assert all(min(s) >= -1e-6 for s in result["notes"]["heads"]["importance"].values())  # 1 - cos is least unpruned
    assert 0.0 < result["after"]["cosine"] < 1.0 == pytest.approx(result["before"]["cosine"])
    model, _ = catalog.load_run(tmp_path / "out")
    assert [model.stack.block_at(i).part("mixer").heads for i in range(2)] == [3, 3]
    assert result["before"]["parameters"] - result["after"]["parameters"] == 2 * PER_HEAD + 2 * 64 * (2 * 32 + 1)


PRUNABLE_MIXERS = [n for n in registry.list_components("mixer") if registry.get("mixer", n).prunable_heads]
PRUNABLE_FFNS = [n for n in registry.list_components("ffn") if callable(getattr(registry.get("ffn", n), "prune_hidden", None))]


def test_the_capabilities_are_declared_where_the_method_finds_them():
    assert PRUNABLE_MIXERS == ["softmax"] and PRUNABLE_FFNS == ["glu", "mlp"]


@pytest.mark.parametrize("name", PRUNABLE_MIXERS)
def test_every_prunable_mixer_removes_heads_exactly(name):
    torch.manual_seed(0)
    mixer = registry.build("mixer", name, dim=DIM, heads=HEADS, max_len=8).eval()
    x = torch.randn(2, 8, DIM)
    with torch.no_grad(), scaled_input(mixer.heads_output(), head_scale(mixer, [1, 3])):
        want = mixer(x)
    mixer.prune_heads([0, 2])
    assert (mixer.heads, mixer.head_dim, mixer.heads_output().in_features) == (2, HD, 2 * HD)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", PRUNABLE_FFNS)
def test_every_prunable_ffn_removes_units_exactly(name):
    torch.manual_seed(0)
    ffn = registry.build("ffn", name, dim=DIM, hidden=16).eval()
    x = torch.randn(2, 8, DIM)
    keep = [0, 3, 4, 9, 15]
    with torch.no_grad(), scaled_input(ffn.hidden_linears()[1], torch.isin(torch.arange(16), torch.tensor(keep)).float()):
        want = ffn(x)
    ffn.prune_hidden(keep)
    assert [linear.out_features for linear in ffn.hidden_linears()[0]] == [5] * len(ffn.hidden_linears()[0])
    with torch.no_grad():
        torch.testing.assert_close(ffn(x), want, atol=1e-6, rtol=0)
