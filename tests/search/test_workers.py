"""Two worker processes on one storage, one killed with kill -9 mid-trial: its trial is failed
and retried in the same folder, no trial is lost or counted twice, and a rerun of the same
command continues the study. On the journal file (the default) and on a real PostgreSQL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

import anyformer as af
from anyformer.search.storage import open_storage

SPACE = {"model": {"preset": "vit", "dim": {"choice": [16, 24]}, "depth": {"int": [1, 2]}, "heads": 2,
                   "mixer": {"choice": {"softmax": {}, "linear": {}}}}}
TRIALS = 4


def _command(out: Path, space: Path, trials: int, storage: str | None, study: str) -> list[str]:
    cmd = [sys.executable, "-m", "anyformer", "search", "--task", "digits", "--space", str(space), "--objectives",
           "quality,params", "--trials", str(trials), "--steps", "40", "--workers", "2", "--out", str(out),
           "--study", study, "--set", "train.eval_every=10", "--no-prune", "--device", "cpu"]
    # A short heartbeat and grace period: the killed worker's trial is stale after 3 s.
    return cmd + (["--storage", storage, "--heartbeat", "1", "--grace", "3"] if storage else [])


def _study(out: Path, storage: str | None, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage, out, 1, 3))
    except KeyError:  # not created yet
        return None


def _kill_one_mid_trial(proc: subprocess.Popen, out: Path, storage: str | None, name: str) -> int:
    """Wait for a trial that has logged an evaluation (mid-training), kill -9 its worker;
    returns the killed trial's number."""
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        study = _study(out, storage, name) if (storage or (out / "study.journal").exists()) else None
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.user_attrs.get("curve") and t.user_attrs.get("worker")] if study else []
        if running:
            trial = running[0]
            pid = int(trial.user_attrs["worker"].split(":")[1])
            os.kill(pid, signal.SIGKILL)
            return trial.number
        time.sleep(0.2)
    raise AssertionError(f"no trial reached an evaluation in time: {proc.poll()=}")


def _run_kill_and_rerun(tmp_path: Path, storage: str | None, rerun: bool) -> None:
    out, space = tmp_path / "search", tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    name = f"kill-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ)
    proc = subprocess.Popen(_command(out, space, TRIALS, storage, name), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, text=True)
    killed = _kill_one_mid_trial(proc, out, storage, name)
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    study = _study(out, storage, name)
    trials = study.get_trials(deepcopy=False)
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    finished = by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED]
    # The quota is met exactly: nothing lost, nothing counted twice.
    assert len(finished) == TRIALS, output
    assert [t.number for t in by_state[TrialState.FAIL]] == [killed]
    assert not by_state[TrialState.RUNNING] and not by_state[TrialState.WAITING]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    original = next(t for t in trials if t.number == killed)
    assert retries[0].params == original.params
    # The retry ran in the killed attempt's folder and resumed its checkpoint.
    assert retries[0].user_attrs["folder"] == original.user_attrs["folder"]
    metrics = (out / original.user_attrs["folder"] / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) > 0
    assert "retry of" in output and "killed by signal 9" in output
    front = (out / "front.csv").read_text().splitlines()
    assert len(front) >= 2  # a header and at least one trial

    if not rerun:
        return
    # A rerun with more trials continues the study (in this process, one worker: the same
    # loop the command runs): the old trials stay, the quota grows by exactly one.
    af.search(out=out, resume=True, trials=TRIALS + 1, workers=1)
    study = _study(out, storage, name)
    after = study.get_trials(deepcopy=False)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in after) == TRIALS + 1
    assert {t.number for t in trials} <= {t.number for t in after}
    assert len({tuple(sorted(t.params.items())) for t in after if t.state == TrialState.COMPLETE}) >= 2
    print(f"trials before the kill-rerun: {len(trials)} ({len(finished)} finished, 1 failed), after: {len(after)}")


def test_journal_workers_killed_lose_nothing(tmp_path):
    _run_kill_and_rerun(tmp_path, None, rerun=True)


def test_postgres_workers_killed_lose_nothing(tmp_path, postgres_url):
    # The rerun path is the same code on either storage: checked once, on the journal.
    _run_kill_and_rerun(tmp_path, postgres_url, rerun=False)
