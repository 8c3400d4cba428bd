"""DDP with 2 CPU processes (gloo) follows the loss curve of 1 process at the same global batch."""
import os
import subprocess
import sys

import pytest
import yaml

from anyformer.train import read_metrics

CONFIG = {
    "model": {"preset": "vit", "dim": 16, "depth": 1, "heads": 2},
    "task": {"name": "digits"},
    # fp32: under bf16 autocast (`auto` on CPUs with bf16 units) each process's half batch
    # rounds differently from the whole batch, far above this test's 1e-4.
    "train": {"steps": 12, "batch_size": 32, "eval_every": 12, "log_every": 1, "lr": 3e-3, "seed": 1, "progress": False,
              "precision": "fp32"},
}


def test_two_processes_match_one(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "anyformer", "train", str(cfg), "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "anyformer", "train", str(cfg), "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    curve = lambda run: [m["loss"] for m in read_metrics(tmp_path / run) if "split" not in m]  # noqa: E731
    a, b = curve("one"), curve("two")
    assert len(a) == len(b) == 12
    assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
