"""`anyformer compare`: trains each model, profiles it, ranks, marks the Pareto front,
writes results.json / results.csv / report.html, and resumes after a kill."""
import csv
import json

import pytest

from anyformer.cli import main
from anyformer.compare import default_models, parse_model_spec
from anyformer.errors import ConfigError
from anyformer.stats import pareto_front
from anyformer.tasks.digits import DigitsTask

SMALL = ["--set", "dim=16", "--set", "depth=1", "--set", "heads=2"]


def test_pareto_front():
    pts = [(0.9, 10.0), (0.8, 5.0), (0.85, 20.0), (0.9, 12.0), (0.5, 1.0)]
    assert pareto_front(pts) == [True, True, False, False, True]
    # A test of the difference decides where it has one: no cheaper point beats (0.85, 20)
    # beyond the noise; pairs without a test follow the plain rule, which drops (0.9, 12).
    tested = {(0, 2): False, (1, 2): False, (3, 2): False}
    assert pareto_front(pts, lambda j, i: tested.get((j, i))) == [True, True, True, False, True]


def test_a_model_without_a_score_is_never_on_a_front():
    """A model whose test metric is NaN (diverged, or a split too small) has measured no
    quality: however cheap it is, it does not belong on a quality-vs-cost front."""
    from anyformer.compare import mark_pareto

    rows = [{"model": "good", "quality": 0.9, "higher_is_better": True, "latency_ms": 10.0, "params": 1000},
            {"model": "nan", "quality": float("nan"), "higher_is_better": True, "latency_ms": 1.0, "params": 10}]
    mark_pareto(rows)
    assert [(r["pareto_latency"], r["pareto_params"]) for r in rows] == [(True, True), (False, False)]


def test_model_specs():
    assert parse_model_spec("vit+linear").model == {"preset": "vit", "mixer": "linear"}
    with pytest.raises(ConfigError, match="did you mean 'linear'"):
        parse_model_spec("vit+linaer")
    with pytest.raises(ConfigError, match="unknown preset"):
        parse_model_spec("vitt")
    names = [s.name for s in default_models(DigitsTask(), {"dim": 16, "heads": 2, "depth": 1})]
    assert names[0] == "vit" and "vit+linear" in names and "vit+local" in names
    assert all("softmax" not in n for n in names)


def test_compare_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--task", "digits", "--models", "vit,vit+linear", "--steps", "30", "--out", str(out), *SMALL]
    main(args)
    printed = capsys.readouterr().out
    assert "vit+linear" in printed and "test accuracy" in printed and "*" in printed
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    models = [r for r in rows if not r["baseline"]]
    assert [r["model"] for r in models] == ["vit", "vit+linear"] or [r["model"] for r in models] == ["vit+linear", "vit"]
    # The printed table is ranked like results.json: best mean quality first, then the baseline.
    assert printed.index(rows[0]["model"] + " ") < printed.index(rows[1]["model"] + " ")
    assert [r["quality"] for r in models] == sorted((r["quality"] for r in models), reverse=True)
    assert [r["model"] for r in rows[2:]] == ["majority class"] and rows[2]["baseline"]
    assert all(r["steps"] == 30 and r["params"] > 0 and r["latency_ms"] > 0 and r["flops_per_sample"] > 0 for r in models)
    best = models[0]
    assert best["tied_with_best"] and (best["pareto_latency"] or best["pareto_params"])  # the best model is always on a front
    with open(out / "results.csv") as fh:
        assert {r["model"] for r in csv.DictReader(fh)} == {"vit", "vit+linear", "majority class"}
    html = (out / "report.html").read_text()
    assert "vit+linear" in html

    # Resume: a finished model is read back, not retrained; a missing one is trained.
    stamp = (out / "vit" / "seed-0" / "summary.json").stat().st_mtime_ns
    (out / "vit+linear" / "seed-0" / "summary.json").unlink()
    main(args)
    err = capsys.readouterr().err
    assert "vit seed 0: finished earlier" in err and "vit+linear seed 0: training" in err
    assert (out / "vit" / "seed-0" / "summary.json").stat().st_mtime_ns == stamp


def test_compare_killed_mid_model_resumes_its_checkpoint_exactly(tmp_path):
    """kill -9 in the middle of a model's training (not between models): the rerun resumes the
    seed from its time-cadence checkpoint and ends with the uninterrupted job's numbers."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def cmd(out):
        return [sys.executable, "-m", "anyformer", "compare", "--task", "digits", "--models", "vit", "--steps", "200",
                "--set", "train.eval_every=1000", "--set", "train.checkpoint_every_s=0.05", "--out", str(out), *SMALL]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    # The uninterrupted job runs beside the one to be killed (one thread each).
    uninterrupted = subprocess.Popen(cmd(full), env=env, stdout=subprocess.DEVNULL,
                                     stderr=(tmp_path / "full.err").open("w"))
    proc = subprocess.Popen(cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state, step, deadline = killed / "vit" / "seed-0" / "state.json", 0, time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            step = json.loads(state.read_text())["step"] if state.exists() else 0
        except (json.JSONDecodeError, OSError):
            step = 0
        if 0 < step < 200:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and 0 < step < 200, "the job must be killed inside the model's run"
    rerun = subprocess.run(cmd(killed), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "training 200 steps (resuming)" in rerun.stderr
    assert uninterrupted.wait(timeout=600) == 0, (tmp_path / "full.err").read_text()
    a, b = (json.loads((d / "results.json").read_text()) for d in (full, killed))
    row_a, row_b = (next(r for r in x["rows"] if r["model"] == "vit") for x in (a, b))
    assert row_b["steps"] == 200 and row_a["seeds"][0]["quality"] == row_b["seeds"][0]["quality"]
    assert (full / "vit" / "seed-0" / "metrics.jsonl").read_text() == (killed / "vit" / "seed-0" / "metrics.jsonl").read_text()


def test_a_model_file_named_with_dots_keeps_its_runs_inside_out(tmp_path, capsys):
    """`--models /d/...yaml` names the model '..': its run folder must not be the parent of --out."""
    models = tmp_path / "d"
    models.mkdir()
    (models / "...yaml").write_text("model: {preset: vit}\n")
    out = tmp_path / "box" / "cmp"
    main(["compare", "--task", "digits", "--models", str(models / "...yaml"), "--steps", "1", "--out", str(out), *SMALL])
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == ["cmp"]
    runs = [p for p in out.rglob("summary.json")]
    assert len(runs) == 1 and runs[0].resolve().is_relative_to(out.resolve())


def test_two_models_that_would_share_a_folder_are_refused(tmp_path):
    for name in ("a b", "a_b"):
        (tmp_path / f"{name}.yaml").write_text("model: {preset: vit}\n")
    with pytest.raises(ConfigError, match="would share one run folder"):
        from anyformer.compare import compare
        from anyformer.config import ComponentSpec

        compare(ComponentSpec(name="digits"), [str(tmp_path / "a b.yaml"), str(tmp_path / "a_b.yaml")], steps=1,
                out=tmp_path / "c", model_overrides={"dim": 16, "depth": 1, "heads": 2})
