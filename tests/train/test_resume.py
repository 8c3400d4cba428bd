"""A run killed with SIGKILL mid-training and resumed ends exactly like an uninterrupted one."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from anyformer import rundir
from tests.cli_run import run_cli

CONFIG = {
    "model": {"preset": "vit", "dim": 16, "depth": 1, "heads": 2, "dropout": 0.1},
    "task": {"name": "digits"},
    "train": {"steps": 200, "batch_size": 16, "eval_every": 50, "checkpoint_every": 5, "log_every": 5,
              "lr": 3e-3, "warmup_steps": 10, "seed": 3, "progress": False},
}


def _cmd(cfg_path, out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "anyformer", "train", str(cfg_path), "--out", str(out), *extra], env


def test_kill_9_then_resume_matches_uninterrupted_run(tmp_path, capsys):
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(CONFIG))
    full, killed = tmp_path / "full", tmp_path / "killed"

    # The uninterrupted run trains beside the one to be killed (one thread each).
    cmd, env = _cmd(cfg_path, full)
    uninterrupted = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=(tmp_path / "full.err").open("w"))
    cmd, env = _cmd(cfg_path, killed)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    step = 0
    while time.time() < deadline and proc.poll() is None:
        state = killed / "state.json"
        try:
            step = json.loads(state.read_text())["step"] if state.exists() else 0
        except (json.JSONDecodeError, OSError):
            step = 0
        if step >= 60:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run must be killed before it finishes"
    assert not (killed / "summary.json").exists()

    # A plain restart without --resume refuses to overwrite the checkpoint.
    code, _, err = run_cli(["train", cfg_path, "--out", killed], capsys)
    assert code == 2 and "--resume" in err
    assert uninterrupted.wait(timeout=600) == 0, (tmp_path / "full.err").read_text()

    cmd, env = _cmd(cfg_path, killed, "--resume")
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)

    assert (killed / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()
    a, b = load_file(str(full / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = json.loads((full / "summary.json").read_text()), json.loads((killed / "summary.json").read_text())
    assert sa["final"] == sb["final"] and sa["steps"] == sb["steps"] == 200


def test_checkpoint_journal_recovery(tmp_path):
    model = torch.nn.Linear(3, 2)
    rundir.write_checkpoint(tmp_path, model, {"x": torch.zeros(1)}, {"step": 1})
    # Killed after all temporaries and the marker were written: recovery finishes the commit.
    torch.nn.init.ones_(model.weight)
    rundir.save_weights(model, tmp_path / "model.safetensors.tmp")
    (tmp_path / "state.json.tmp").write_text(json.dumps({"step": 2}))
    (tmp_path / rundir.MARKER).write_text("2")
    _, meta = rundir.read_checkpoint(tmp_path)
    assert meta["step"] == 2 and torch.equal(load_file(str(tmp_path / "model.safetensors"))["weight"], torch.ones(2, 3))
    # Killed while writing temporaries (no marker): they are discarded, the old checkpoint stays.
    (tmp_path / "state.json.tmp").write_text("{half")
    _, meta = rundir.read_checkpoint(tmp_path)
    assert meta["step"] == 2 and not (tmp_path / "state.json.tmp").exists()


def test_load_weights_rejects_a_foreign_file(tmp_path):
    from anyformer.errors import DataError

    rundir.save_weights(torch.nn.Linear(3, 2), tmp_path / "w.safetensors")
    with pytest.raises(DataError, match="does not match"):
        rundir.load_weights(torch.nn.Linear(4, 2), tmp_path / "w.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="not a readable"):
        rundir.load_weights(torch.nn.Linear(3, 2), tmp_path / "bad.safetensors")


def test_restart_before_first_checkpoint_rewrites_metrics(tmp_path):
    """A run killed before its first checkpoint leaves config.yaml and some metrics lines;
    starting it again (with or without --resume) must not append to those stale lines."""
    from anyformer.train import train
    from anyformer.train.config import run_config

    def cfg():
        return run_config({"model": {"preset": "vit", "dim": 16, "depth": 1, "heads": 2}, "task": "digits",
                           "train": {"steps": 4, "batch_size": 8, "eval_every": 2, "log_every": 1, "progress": False}})

    train(cfg(), tmp_path / "full")
    full = (tmp_path / "full" / "metrics.jsonl").read_text()
    for resume in (False, True):
        killed = tmp_path / f"killed-{resume}"
        killed.mkdir()
        (killed / "config.yaml").write_text((tmp_path / "full" / "config.yaml").read_text())
        (killed / "metrics.jsonl").write_text(full.splitlines(keepends=True)[0])
        train(cfg(), killed, resume=resume)
        assert (killed / "metrics.jsonl").read_text() == full


def test_resume_between_log_steps_writes_the_same_metrics(tmp_path, monkeypatch):
    """A checkpoint that falls between two logged steps (checkpoint_every not a multiple of
    log_every, as a budgeted compare sets it) must carry the losses not yet logged, or the
    resumed run logs a mean over fewer steps than the uninterrupted one."""
    from anyformer.train import loop, train
    from anyformer.train.config import run_config

    def cfg():
        return run_config({"model": {"preset": "vit", "dim": 16, "depth": 1, "heads": 2}, "task": "digits",
                           "train": {"steps": 8, "batch_size": 8, "eval_every": 4, "checkpoint_every": 3,
                                     "log_every": 2, "progress": False}})

    train(cfg(), tmp_path / "full")
    real_step, calls = loop.Trainer._train_step, {"n": 0}

    def dies_at_step_5(self):
        calls["n"] += 1
        if calls["n"] == 5:  # after the checkpoint at step 3 and the log line of step 4
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(loop.Trainer, "_train_step", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(), tmp_path / "killed")
    monkeypatch.setattr(loop.Trainer, "_train_step", real_step)
    train(cfg(), tmp_path / "killed", resume=True)
    assert (tmp_path / "killed" / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()
