"""Predictable time: one duration syntax for --budget, a total budget split over models x
seeds, the default cap announced in the plan line, the job's progress, and plain progress
lines when `train` is piped."""
import os
import re
import subprocess
import sys

import pytest

from anyformer import rundir
from anyformer.budget import DEFAULT_TOTAL_S, JobClock, budget_note, format_duration, parse_duration, run_budget, split_budget
from anyformer.cli import main
from anyformer.compare import compare
from anyformer.config import ComponentSpec
from anyformer.errors import ConfigError

SMALL = {"dim": 16, "depth": 1, "heads": 2}


def fake_cost(step_ms: float) -> dict:
    timing = {"median_ms": 1.0, "min_ms": 0.9, "max_ms": 1.1}
    return {"params": {"total": 3850, "non_embedding": 3578}, "flops": {"forward_per_sample": 1e5}, "batch": 64,
            "forward": timing, "forward_backward": {**timing, "median_ms": step_ms, "min_ms": step_ms}, "memory": {"forward_peak_bytes": 2**20}}


@pytest.mark.parametrize("text, seconds", [("90", 90.0), (45, 45.0), ("90s", 90.0), ("1.5s", 1.5), ("10m", 600.0),
                                           ("10min", 600.0), ("1h", 3600.0), ("0.5h", 1800.0), (" 2M ", 120.0), (".5m", 30.0)])
def test_durations_parse_to_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "m", "-5s", "0", "1h30m", "ten minutes", "1e3"])
def test_bad_durations_are_one_line_config_errors(text):
    with pytest.raises(ConfigError, match=r"^--total-budget .*: not a duration; give seconds or a number with s, m or h"):
        parse_duration(text, "--total-budget")


def test_no_duration_is_none_and_durations_format_as_estimates():
    assert parse_duration(None) is None
    assert [format_duration(s) for s in (12.4, 89, 600, 5399, 9000)] == ["12 s", "89 s", "10 min", "90 min", "2.5 h"]


def test_a_total_budget_is_split_equally_after_what_was_spent():
    assert split_budget(600, 6) == 100.0
    assert split_budget(600, 6, spent_s=60) == 90.0
    assert split_budget(10, 4, spent_s=30) == 0.0  # overspent: every run trains its minimum
    with pytest.raises(ConfigError):
        split_budget(600, 0)


def test_run_budget_picks_the_given_budget_the_split_or_the_default_cap():
    assert run_budget(6, estimate_s=5000, spent_s=0, budget_s=30) == (30, None)
    assert run_budget(6, estimate_s=5000, spent_s=60, total_s=660) == (100.0, 660)
    assert run_budget(6, estimate_s=5000, spent_s=0, steps=100) == (None, None)
    assert run_budget(6, estimate_s=DEFAULT_TOTAL_S, spent_s=0) == (None, None)  # fits: the default steps
    assert run_budget(6, estimate_s=5000, spent_s=0) == (100.0, DEFAULT_TOTAL_S)
    with pytest.raises(ConfigError, match="not both"):
        run_budget(6, estimate_s=1, spent_s=0, budget_s=30, total_s=600)
    assert budget_note(100.0, 600.0, given=False) == ("no budget given: 10 min in all, 100 s per model-seed; "
                                                      "set --budget/--total-budget/--steps to change")
    assert budget_note(100.0, 600.0, given=True).startswith("total budget 10 min split equally over the model-seeds")
    assert budget_note(30.0, None, given=False) == ""


def test_the_job_clock_reports_the_share_done_and_the_time_left_at_the_pace_so_far():
    clock = JobClock(runs=4, planned_s=400)
    assert clock.finish(100, actual_s=200) == "job 25% done, about 10 min left"  # twice as slow as planned: 600 s
    assert clock.finish(100) == "job 50% done, about 7 min left"  # read back: the pace stays 2x
    clock.finish(100, actual_s=100)
    assert clock.finish(100, actual_s=100) == "job done"


def test_no_budget_is_capped_by_the_default_total_and_announced(tmp_path, capsys):
    out = tmp_path / "cmp"
    # 4 s a step (x 1.25 overhead) x 1500 default steps x 2 seeds is far over 10 minutes.
    rundir.atomic_write_json(out / "vit" / "cost.json", fake_cost(step_ms=4000.0))
    compare(ComponentSpec(name="digits"), ["vit"], seeds=2, out=out, model_overrides=SMALL, train_overrides={"progress": False})
    err = capsys.readouterr().err
    plan = rundir.read_json(out / "vit" / "plan.json")
    share = plan["run_budget_s"]
    assert plan["budget_s"] is None and plan["total_budget_s"] is None and 290 < share <= 300
    assert plan["planned_steps"] == int(share / 5.0)
    assert (f"no budget given: 10 min in all, {share:.0f} s per model-seed; set --budget/--total-budget/--steps to change"
            in err)
    assert f"plan: 1 models x 2 seeds x budget {share:.4g} s ({plan['planned_steps']} steps)" in err
    steps = [rundir.read_json(out / "vit" / f"seed-{k}" / "summary.json")["steps"] for k in range(2)]
    assert steps == [plan["planned_steps"]] * 2
    assert re.search(r"\[1/2\] vit seed 0: accuracy [0-9.]+ in \d+ s; job 50% done, about .* left", err)
    assert re.search(r"\[2/2\] vit seed 1: accuracy [0-9.]+ in \d+ s; job done", err)


def test_cli_total_budget_is_split_over_models_and_seeds(tmp_path, capsys):
    out = tmp_path / "cmp"
    main(["compare", "--task", "digits", "--models", "vit", "--seeds", "2", "--total-budget", "1s", "--set", "dim=16",
          "--set", "depth=1", "--set", "train.progress=false", "--out", str(out)])
    err = capsys.readouterr().err
    plan = rundir.read_json(out / "vit" / "plan.json")
    assert plan["total_budget_s"] == 1.0 and 0 <= plan["run_budget_s"] <= 0.5
    assert "total budget 1 s split equally over the model-seeds after the cost measurements" in err
    assert re.search(r"plan: 1 models x 2 seeds x budget [0-9.e-]+ s \(\d+ steps\); about [0-9.]+ s of training left", err)
    steps = [rundir.read_json(out / "vit" / f"seed-{k}" / "summary.json")["steps"] for k in range(2)]
    assert steps == [plan["planned_steps"]] * 2 and plan["planned_steps"] >= 10
    # The old spelling still works, and the same total for the same folder reads the seeds back.
    main(["compare", "--task", "digits", "--models", "vit", "--seeds", "2", "--total-budget", "1", "--set", "dim=16",
          "--set", "depth=1", "--set", "train.progress=false", "--out", str(out)])
    assert "[2/2] vit seed 1: finished earlier, read back; job done" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--task", "digits", "--models", "vit", "--budget-s", "1", "--out", str(out)])
    assert "planned for None s" in capsys.readouterr().err


def test_piped_train_prints_plain_progress_lines(tmp_path):
    env = {**os.environ, "COLUMNS": "120"}
    done = subprocess.run([sys.executable, "-m", "anyformer.cli", "train", "--steps", "20", "--budget", "10m", "--set", "dim=16",
                           "--set", "depth=1", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("train step ")]
    assert [int(re.match(r"train step (\d+)/20 loss [0-9.]+", line).group(1)) for line in lines] == list(range(2, 21, 2))
    assert all(re.search(r"\(\d+ s\)$", line) for line in lines)
