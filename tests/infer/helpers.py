"""Tiny trained runs for the predict tests: a few steps are enough, since the tests compare
predict's numbers with the run's own, not with good ones."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from anyformer.rundir import read_json
from anyformer.train import train
from anyformer.train.config import run_config

TINY = {"model.dim": 32, "model.depth": 1, "model.heads": 2, "train.steps": 12, "train.eval_every": 6,
        "train.batch_size": 16, "train.eval_batch_size": 16, "train.progress": False, "train.device": "cpu"}


def train_tiny(task: dict[str, Any], out: Path, model: str = "transformer", **overrides: Any) -> Path:
    """Train `model` on `task` (a spec with 'name') into `out` for a few steps; the run directory."""
    train(run_config({"model": model, "task": task}, {**TINY, **overrides}), out)
    return out


def final_metrics(run: Path, split: str = "test") -> dict[str, float]:
    """The metrics training reported for `split` at its end (summary.json)."""
    return read_json(run / "summary.json")["final"][split]
