"""Continual fine-tuning with selective initialisation: every run an ordinary run directory,
the learner's choice the best probe as the rule says, each chosen run started from the
checkpoint it names (the shared stack loaded, another task's encoder and head fresh), the
matrix cells the runs' own test scores, a rerun that trains nothing, negative transfer
flagged only beyond the noise, and the sequence file checked with paths and did-you-mean."""
import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

import anyformer as af
from anyformer.errors import ConfigError
from anyformer.rundir import read_json
from anyformer.studies.continual import SCRATCH, _cell_stats, choose, init_name
from anyformer.studies.continual_config import parse_sequence
from tests.cli_run import run_cli
from tests.studies.helpers import COPY, TRAIN, files

MODULAR = {"name": "modular", "p": 5}
SEQUENCE = {"model": {"preset": "gpt", "dim": 16, "depth": 1, "heads": 2}, "train": {**TRAIN, "steps": 6, "eval_every": 6},
            "probe": {"steps": 2}, "seeds": 2,
            "tasks": [{"task": COPY, "label": "copy-a"}, {"task": MODULAR, "label": "mod"},
                      {"task": {**COPY, "seed": 1}, "label": "copy-b", "train": {"steps": 8}}]}
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "configs" / "continual").glob("*.yaml"))
RESULTS = ("continual.json", "transfer_matrix.csv", "transfer_matrix.png")


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    out = tmp_path_factory.mktemp("continual") / "seq"
    return out, af.continual(copy.deepcopy(SEQUENCE), out)


def test_choice_follows_the_probes_and_starts_from_the_checkpoint_it_names(ran):
    out, result = ran
    assert result["sequence"] == ["copy-a", "mod", "copy-b"]
    last = result["tasks"][2]
    assert last["inits"] == [SCRATCH, "from-copy-a", "from-mod"]
    for k, record in enumerate(last["seeds"]):
        folder = out / f"seed-{k}" / "2-copy-b"
        probes = {n: read_json(folder / "probe" / n / "summary.json") for n in last["inits"]}
        assert all(s["steps"] == 2 for s in probes.values())
        assert record["probes"] == {n: s["final"]["val"]["loss"] for n, s in probes.items()}
        assert record["choice"] == choose(record["probes"], False, 0.0)  # validation loss: lower wins
        # Each full run from a past task starts from the checkpoint the learner chose for that task.
        for j, label in enumerate(["copy-a", "mod"]):
            chosen = result["tasks"][j]["seeds"][k]["choice"]
            summary = read_json(folder / init_name(label) / "summary.json")
            assert summary["steps"] == 8
            assert summary["init"]["from"] == str(out / f"seed-{k}" / f"{j}-{label}" / chosen / "model.safetensors")
        assert "init" not in read_json(folder / SCRATCH / "summary.json")
    # The modular checkpoint has another vocabulary and head: only the shared stack loads.
    fresh = read_json(out / "seed-0" / "2-copy-b" / "from-mod" / "summary.json")["init"]["fresh"]
    assert any(n.startswith("encoder.") for n in fresh) and any(n.startswith("head.") for n in fresh)
    assert not any(n.startswith("stack.") for n in fresh)


def test_matrix_cells_are_the_runs_test_scores(ran):
    out, result = ran
    for i, record in enumerate(result["tasks"]):
        for name in record["inits"]:
            scores = [read_json(out / f"seed-{k}" / f"{i}-{record['task']}" / name / "summary.json")["final"]["test"]["accuracy"]
                      for k in range(2)]
            cell = record["cells"][name]
            assert cell["test_seeds"] == scores and cell["test_mean"] == pytest.approx(np.mean(scores))
            assert cell["chosen"] == sum(s["choice"] == name for s in record["seeds"])
            if name != SCRATCH:
                assert cell["delta_vs_scratch"] == pytest.approx(cell["test_mean"] - record["cells"][SCRATCH]["test_mean"])
        best = max(record["inits"], key=lambda n: (record["cells"][n]["test_mean"], n == SCRATCH))
        assert record["best"] == best and [n for n in record["inits"] if record["cells"][n]["best"]] == [best]
    assert read_json(out / "continual.json") == result
    lines = (out / "transfer_matrix.csv").read_text().splitlines()
    assert len(lines) == 1 + 1 + 2 + 3 and lines[0].startswith("task,init,test_mean")
    assert (out / "transfer_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_through_the_cli_trains_nothing(ran, tmp_path, capsys):
    out, result = ran
    before = files(out, skip=RESULTS)
    config = tmp_path / "seq.yaml"
    config.write_text(yaml.safe_dump(SEQUENCE))
    code, stdout, err = run_cli(["continual", config, "--out", out], capsys)
    assert code == 0, err
    assert files(out, skip=RESULTS) == before
    assert "training" not in err and "copy-b" in stdout
    assert read_json(out / "continual.json")["tasks"] == result["tasks"]
    code, _, err = run_cli(["continual", config, "--out", out, "--set", "train.lr=0.5"], capsys)
    assert code == 2 and "holds a finished run of another config" in err and len(err.strip().splitlines()) == 1


def test_choose_prefers_scratch_unless_a_checkpoint_beats_it_by_the_margin():
    assert choose({SCRATCH: 0.5, "from-a": 0.6, "from-b": 0.7}, True, 0.0) == "from-b"
    assert choose({SCRATCH: 0.5, "from-a": 0.5}, True, 0.0) == SCRATCH
    assert choose({SCRATCH: 0.5, "from-a": 0.55}, True, 0.1) == SCRATCH
    assert choose({SCRATCH: 2.0, "from-a": 1.0}, False, 0.0) == "from-a"  # a loss: lower wins
    assert choose({SCRATCH: 0.1, "from-a": float("nan")}, True, 0.0) == SCRATCH


def test_negative_transfer_is_flagged_only_beyond_the_noise():
    rng = np.random.default_rng(0)
    good = [(rng.random(40) < 0.9).astype(float) for _ in range(3)]
    bad = [(rng.random(40) < 0.3).astype(float) for _ in range(3)]
    scores = lambda mats: [float(m.mean()) for m in mats]  # noqa: E731
    cells = _cell_stats({SCRATCH: good, "from-a": bad, "from-b": good}, {SCRATCH: scores(good), "from-a": scores(bad),
                                                                           "from-b": scores(good)}, higher=True)
    assert cells["from-a"]["transfer"] == "negative" and cells["from-a"]["p_value"] < 0.05
    assert cells["from-b"]["transfer"] == "none" and cells["from-b"]["delta_vs_scratch"] == 0
    lower = _cell_stats({SCRATCH: good, "from-a": bad}, {SCRATCH: scores(good), "from-a": scores(bad)}, higher=False)
    assert lower["from-a"]["transfer"] == "positive"  # an error rate: lower is better


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(taks=d.pop("tasks")), "taks: unknown field (did you mean 'tasks'?)"),
    (lambda d: d["probe"].update(stesp=3), "probe.stesp: unknown field (did you mean 'steps'?)"),
    (lambda d: d["tasks"][1].update(lable="x"), "tasks[1].lable: unknown field (did you mean 'label'?)"),
    (lambda d: d["tasks"][2]["train"].update(stpes=3), "tasks[2].train.stpes: unknown field (did you mean 'steps'?)"),
    (lambda d: d["train"].update(lr=-1), "train.lr: Input should be greater than 0"),
    (lambda d: d["probe"].update(share=2), "probe.share: Input should be less than or equal to 1"),
    (lambda d: d["tasks"][1]["task"].update(name="modulr"), "tasks[1]: unknown task 'modulr' (did you mean 'modular'?)"),
    (lambda d: d["tasks"][2].update(label="mod"), "tasks[2]: label 'mod' is used twice"),
    (lambda d: d["tasks"][1].update(train={"init": "runs/x"}), "tasks[1].train.init: a sequence chooses"),
    (lambda d: d.update(tasks=d["tasks"][:1]), "tasks: a sequence needs at least two tasks"),
])
def test_sequence_errors_name_their_path(change, message):
    data = copy.deepcopy(SEQUENCE)
    change(data)
    with pytest.raises(ConfigError) as err:
        parse_sequence(data)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_sequences_parse(path):
    seq, steps = parse_sequence(path)
    assert len(steps) >= 2 and seq.seeds >= 1


def test_an_unknown_probe_metric_stops_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"probe.metric \(tasks\[0\] copy-a\): unknown metric .*'accurcy'.*did you mean 'accuracy'"):
        af.continual({**SEQUENCE, "probe": {"steps": 2, "metric": "accurcy"}}, tmp_path / "o")
    assert not any((tmp_path / "o").rglob("summary.json"))


def test_cli_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SEQUENCE, "seed": 3}))
    code, _, err = run_cli(["continual", bad, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "seed: unknown field (did you mean 'seeds'?)" in err and len(err.strip().splitlines()) == 1
