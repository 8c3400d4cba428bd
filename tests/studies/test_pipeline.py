"""The pipeline train -> compress -> eval from one config: each step a run directory, the
final stage's reported metric equal to a fresh evaluation of it, parameters cut by exactly
what pruning removes, a resume that redoes nothing finished and remakes only a deleted stage,
and the whole `compress:` section checked before any training, errors naming its path."""
import copy
import shutil
from pathlib import Path

import pytest
import yaml

import anyformer as af
from anyformer import catalog
from anyformer.rundir import read_json
from anyformer.studies.pipeline import pipeline
from anyformer.studies.stages import parse_steps
from anyformer.train.config import run_config
from anyformer.train.evaluate import evaluate_run
from tests.cli_run import run_cli
from tests.studies.helpers import COPY, TRAIN, files, without

DIM, DEPTH, HIDDEN = 32, 2, 128  # gpt's mlp: 4 x dim hidden units
STEPS = [{"method": "prune", "neurons_fraction": 0.25, "finetune_steps": 2},
         {"method": "quantize", "policy": "int8-dynamic", "compiled": False}]
CONFIG = {"model": {"preset": "gpt", "dim": DIM, "depth": DEPTH, "heads": 4}, "task": COPY, "train": TRAIN, "compress": STEPS}
EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "digits-compress.yaml"
WRITTEN_EACH_TIME = ("pipeline.json", "pipeline.csv")


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "run"
    return out, pipeline(copy.deepcopy(CONFIG), out)


def test_every_stage_is_a_run_and_the_final_metric_is_a_fresh_evaluation(piped):
    out, result = piped
    assert [r["stage"] for r in result["stages"]] == ["train", "1-prune", "2-quantize"]
    final = out / "compress" / "2-quantize"
    assert result["final"]["run"] == str(final)
    metric = result["metric"]
    _, fresh = evaluate_run(final, ["test"], "cpu")
    assert result["final"]["test"][metric] == fresh["test"][metric]
    assert result["stages"][-1]["quality"] == fresh["test"][metric]
    # The trained row is the trained run measured as compress measures it: its summary's number.
    assert result["stages"][0]["quality"] == pytest.approx(read_json(out / "summary.json")["final"]["test"][metric])
    # Pruning a quarter of each layer's 128 units removes their fc1 rows (with biases) and fc2 columns.
    trained, pruned, quantized = result["stages"]
    assert trained["parameters"] - pruned["parameters"] == DEPTH * (HIDDEN // 4) * (2 * DIM + 1)
    model, _ = catalog.load_run(out / "compress" / "1-prune")
    assert sum(p.numel() for p in model.parameters()) == pruned["parameters"]
    assert quantized["weights_mb"] < pruned["weights_mb"] / 2  # int8 weights in memory
    assert read_json(out / "pipeline.json") == result
    lines = (out / "pipeline.csv").read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("stage,step,quality,parameters")
    assert read_json(out / "compress" / "1-prune" / "stage.json")["from"] == str(out)


def test_resume_redoes_nothing_finished_and_remakes_only_a_deleted_stage(piped, tmp_path):
    source, first = piped
    out = tmp_path / "run"
    shutil.copytree(source, out)
    before = files(out, WRITTEN_EACH_TIME)
    again = pipeline(copy.deepcopy(CONFIG), out, resume=True)
    assert files(out, WRITTEN_EACH_TIME) == before
    assert [without(r, "run") for r in again["stages"]] == [without(r, "run") for r in first["stages"]]
    shutil.rmtree(out / "compress" / "2-quantize")
    third = pipeline(copy.deepcopy(CONFIG), out, resume=True)
    kept = {k: v for k, v in before.items() if not k.startswith("compress/2-quantize")}
    assert {k: v for k, v in files(out, WRITTEN_EACH_TIME).items() if k in kept} == kept
    assert (out / "compress" / "2-quantize" / "stage.json").is_file()
    assert third["stages"][:2] == again["stages"][:2]
    assert without(third["stages"][2], "latency_ms", "memory_mb") == without(again["stages"][2], "latency_ms", "memory_mb")
    assert third["final"]["test"] == first["final"]["test"]


def test_train_command_with_resume_reads_the_pipeline_back(piped, tmp_path, capsys):
    source, first = piped
    out = tmp_path / "run"
    shutil.copytree(source, out)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    code, stdout, stderr = run_cli(["train", config, "--out", out, "--resume"], capsys)
    assert code == 0, stderr
    assert "finished earlier, read back" in stderr
    assert "2-quantize" in stdout and f"final run: {out / 'compress' / '2-quantize'}" in stdout
    code, _, stderr = run_cli(["train", config, "--out", out], capsys)
    assert code == 2 and "pass --resume to go on with its compression stages" in stderr


@pytest.mark.parametrize("section,message", [
    ([{"method": "prun"}], r"^compress\[0\]\.method: unknown compression method 'prun' \(did you mean 'prune'\?\)"),
    ([{"method": "quantize"}, {"method": "prune", "neuron_fraction": 0.2}],
     r"^compress\[1\]\.neuron_fraction: option does not apply to method 'prune' \(did you mean 'neurons_fraction'"),
    ([{"method": "quantize"}, {"method": "prune", "neurons_fraction": "a quarter"}],
     r"^compress\[1\]\.neurons_fraction: .*\(method 'prune' takes float \| None\), got 'a quarter'$"),
    ([{"method": "prune", "neurons_fraction": 0.2, "finetune_steps": True}], r"^compress\[0\]\.finetune_steps: .* got True$"),
    ([{"method": "quantize", "policy": 8}], r"^compress\[0\]\.policy: .* got 8$"),
    ([{"neurons_fraction": 0.2}], r"^compress\[0\]: needs a method, one of .*prune"),
    ({"method": "quantize"}, r"^compress: expected a list of steps"),
])
def test_the_section_is_checked_before_training_and_errors_name_the_path(tmp_path, section, message):
    out = tmp_path / "run"
    with pytest.raises(af.ConfigError, match=message) as err:
        af.pipeline({**CONFIG, "compress": section}, out)
    assert "\n" not in str(err.value)
    assert not out.exists()  # nothing trained


def test_a_bad_section_is_one_line_and_exit_2_from_train(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "compress": [{"method": "quantize"}, {"method": "prune", "heads": "two"}]}))
    code, _, stderr = run_cli(["train", config, "--out", tmp_path / "run"], capsys)
    assert code == 2
    assert stderr.strip().startswith("error: compress[1].heads:") and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_example_config_carries_a_valid_section():
    steps = parse_steps(run_config(EXAMPLE).compress)
    assert [(s.method, sorted(s.options)) for s in steps] == [
        ("prune", ["finetune_steps", "heads_fraction", "neurons_fraction"]), ("quantize", ["compiled", "policy"])]
