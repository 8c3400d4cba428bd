"""`anyformer compare` with several seeds, a time budget, baselines, constraints and a
recommendation, run as a user runs it on tiny models."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from anyformer import rundir
from anyformer.cli import main
from anyformer.compare import compare
from anyformer.config import ComponentSpec
from anyformer.errors import ConfigError

SMALL = {"dim": 16, "depth": 1, "heads": 2}
DIGITS = ComponentSpec(name="digits")

TOP_KEYS = {"task", "metric", "higher_is_better", "n_test", "seeds", "interval_method", "tie_test", "constraints",
            "optimize", "recommendation", "recommendation_reason", "reference", "rows", "environment", "test_unit",
            "n_test_units"}
ROW_KEYS = {"model", "quality", "val", "metric", "higher_is_better", "params", "params_non_embedding", "flops_per_sample",
            "latency_ms", "latency_batch", "train_step_ms", "peak_memory_bytes", "steps", "train_seconds", "all_metrics",
            "pareto_latency", "pareto_params", "seeds", "quality_low", "quality_high", "n_test", "tied_with_best", "flags",
            "baseline", "delta", "latency_ms_low", "latency_ms_high", "latency_ms_q1", "latency_ms_q3", "recommended", "feasible"}
SEED_KEYS = {"seed", "quality", "val", "steps", "planned_steps", "train_seconds"}


def fake_cost(step_ms: float) -> dict:
    """A cost.json as the profiler writes it, with a chosen training-step time: the plan is
    computed from it, whatever this machine measures today."""
    timing = {"median_ms": 1.0, "min_ms": 0.9, "max_ms": 1.1}
    return {"params": {"total": 3850, "non_embedding": 3578}, "flops": {"forward_per_sample": 1e5}, "batch": 64,
            "forward": timing, "forward_backward": {**timing, "median_ms": step_ms, "min_ms": step_ms}, "memory": {"forward_peak_bytes": 2**20}}


def quiet(out, **kw):
    return compare(DIGITS, ["vit"], out=out, model_overrides=SMALL, train_overrides={"progress": False}, **kw)


def test_budget_plans_the_steps_once_and_every_seed_trains_them(tmp_path, capsys):
    out = tmp_path / "cmp"
    rundir.atomic_write_json(out / "vit" / "cost.json", fake_cost(step_ms=80.0))
    # 1.0 s / (80 ms x 1.25 overhead) = 10 steps for every seed.
    results = quiet(out, seeds=2, budget_s=1.0)
    err = capsys.readouterr().err
    assert "plan: 1 models x 2 seeds x budget 1 s (10 steps); about 2.0 s of training left" in err
    plan = rundir.read_json(out / "vit" / "plan.json")
    assert plan["planned_steps"] == 10 and plan["budget_s"] == 1.0
    summaries = [rundir.read_json(out / "vit" / f"seed-{k}" / "summary.json") for k in range(2)]
    assert [s["steps"] for s in summaries] == [10, 10]
    [vit] = [r for r in results["rows"] if not r["baseline"]]
    assert [(s["seed"], s["steps"], s["planned_steps"]) for s in vit["seeds"]] == [(0, 10, 10), (1, 10, 10)]
    assert not any("undertrained" in f for f in vit["flags"])
    # Each seed trained with its own seed (weights, data order): their losses differ.
    assert summaries[0]["final"]["test"]["loss"] != summaries[1]["final"]["test"]["loss"]
    # A resume keeps the plan; another budget for the same folder is refused.
    (out / "vit" / "seed-1" / "summary.json").unlink()
    stamp = (out / "vit" / "seed-0" / "summary.json").stat().st_mtime_ns
    quiet(out, seeds=2, budget_s=1.0)
    err = capsys.readouterr().err
    assert "vit seed 0: finished earlier, read back" in err and "vit seed 1: training 10 steps" in err
    assert (out / "vit" / "seed-0" / "summary.json").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="planned for 1.0 s"):
        quiet(out, seeds=2, budget_s=3.0)


def test_seeds_keep_their_test_outcomes_and_the_row_averages_them(tmp_path):
    out = tmp_path / "cmp"
    results = quiet(out, seeds=2, steps=3)
    [vit] = [r for r in results["rows"] if not r["baseline"]]
    means = []
    for k, s in enumerate(vit["seeds"]):
        hits = load_file(str(out / "vit" / f"seed-{k}" / "test_outcomes.safetensors"))["accuracy"]
        assert hits.shape == (results["n_test"],) and set(hits.unique().tolist()) <= {0.0, 1.0}
        assert float(hits.mean()) == pytest.approx(s["quality"], rel=1e-5)
        means.append(s["quality"])
    assert vit["quality"] == pytest.approx(sum(means) / 2)
    assert vit["quality_low"] <= vit["quality"] <= vit["quality_high"]
    assert results["interval_method"].startswith("bootstrap over seeds and test examples")


def test_an_untrained_model_is_flagged_against_the_baseline(tmp_path):
    out = tmp_path / "cmp"
    results = quiet(out, steps=1)
    vit = next(r for r in results["rows"] if r["model"] == "vit")
    base = next(r for r in results["rows"] if r["baseline"])
    assert base["model"] == "majority class"
    # One step from random weights is chance on 10 classes: no better than always "the
    # commonest digit", whose interval it overlaps.
    assert "<= baseline majority class" in vit["flags"]
    assert vit["quality_low"] <= base["quality"]
    assert results["interval_method"] == "Wilson score over test examples"
    # Another seed in the same folder is not answered by the finished run of seed 0.
    with pytest.raises(ConfigError, match="finished run of another config"):
        quiet(out, steps=1, seed=4)


def test_cli_seeds_constraints_and_recommendation(tmp_path, capsys):
    out = tmp_path / "cmp"
    main(["compare", "--task", "digits", "--models", "vit,vit+linear", "--seeds", "2", "--steps", "3", "--set", "dim=16",
          "--set", "depth=1", "--max-params", "100000", "--out", str(out)])
    printed = capsys.readouterr().out
    data = json.loads((out / "results.json").read_text())
    assert set(data) == TOP_KEYS
    assert data["seeds"] == 2 and data["n_test"] == 359 and data["optimize"] == "quality" and data["reference"] == "vit"
    assert data["constraints"] == {"max_latency_ms": None, "max_params": 100000, "max_memory_mb": None}
    env = data["environment"]  # the costs are only comparable on the machine they were measured on
    assert env["torch"] == torch.__version__ and env["cores"] == os.cpu_count() and env["device"] == "cpu"
    assert env["torch_threads"] == torch.get_num_threads() and env["gpu"] is None
    assert data["test_unit"] == "example" and data["n_test_units"] == 359 and "n_test 359 examples" in printed
    for r in data["rows"]:
        assert set(r) == ROW_KEYS, r["model"]
        assert r["n_test"] == 359 and isinstance(r["flags"], list)
        assert all(set(s) == SEED_KEYS for s in r["seeds"])
    models = [r for r in data["rows"] if not r["baseline"]]
    assert sorted(r["model"] for r in models) == ["vit", "vit+linear"]
    assert all(len(r["seeds"]) == 2 and r["feasible"] and r["params"] <= 100000 for r in models)
    assert [(out / r["model"] / f"seed-{k}" / "summary.json").exists() for r in models for k in range(2)] == [True] * 4
    rec = data["recommendation"]
    assert rec["model"] in ("vit", "vit+linear") and [r["model"] for r in data["rows"] if r["recommended"]] == [rec["model"]]
    assert "params <= 100,000" in rec["reason"]
    line = next(ln for ln in printed.splitlines() if ln.startswith("recommendation:"))
    assert rec["model"] in line and "params" in line
    with open(out / "results.csv") as fh:
        header = fh.readline().strip().split(",")
    assert {"quality_seed0", "quality_seed1", "quality_low", "quality_high", "n_test", "flags"} <= set(header)


def test_a_language_model_counts_its_test_set_in_scored_tokens(tmp_path):
    # Intervals resample the scored tokens, not the sequences: the table must say which.
    results = compare(ComponentSpec(name="copy"), ["gpt"], steps=2, out=tmp_path / "lm", model_overrides=SMALL)
    assert results["test_unit"] == "token"
    scored = load_file(str(tmp_path / "lm" / "gpt" / "seed-0" / "test_outcomes.safetensors"))
    assert results["n_test_units"] == next(iter(scored.values())).numel() > results["n_test"]
    assert rundir.read_json(tmp_path / "lm" / "results.json")["n_test_units"] == results["n_test_units"]


def test_seeds_side_by_side_are_the_runs_trained_one_after_another(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    from anyformer.train import side_by_side

    monkeypatch.setattr(side_by_side.os, "cpu_count", lambda: 2)  # two workers of one thread, on any machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels as a one-thread worker: bitwise the same runs
    try:
        alone = compare(DIGITS, ["vit"], seeds=2, steps=4, out=tmp_path / "alone", model_overrides=SMALL, seed_workers=1)
    finally:
        torch.set_num_threads(threads)
    log = io.StringIO()
    together = compare(DIGITS, ["vit"], seeds=2, steps=4, out=tmp_path / "together", model_overrides=SMALL,
                       console=Console(file=log, width=200))
    assert "2 seeds side by side (2 processes x 1 thread), 4 steps each" in log.getvalue()
    for k in range(2):
        a = rundir.read_json(tmp_path / "alone" / "vit" / f"seed-{k}" / "summary.json")
        b = rundir.read_json(tmp_path / "together" / "vit" / f"seed-{k}" / "summary.json")
        assert a["final"] == b["final"] and a["steps"] == b["steps"] == 4
    assert [s["quality"] for s in alone["rows"][0]["seeds"]] == [s["quality"] for s in together["rows"][0]["seeds"]]


def test_side_by_side_workers_share_the_cores():
    from anyformer.train.side_by_side import workers_for

    cores = os.cpu_count() or 1
    assert workers_for(3, torch.device("cpu"), 1) == (1, cores)
    assert workers_for(1, torch.device("cpu")) == (1, cores)
    assert workers_for(64, torch.device("cpu")) == (cores, 1)
    assert workers_for(3, torch.device("cuda")) == (1, cores)  # one accelerator runs one model at a time
