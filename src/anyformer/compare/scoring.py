"""Scoring per test unit: a seed's outcomes (a hit per example, a squared error per
window, ...) for intervals and paired tests, and the task's trivial baselines scored the
same way."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anyformer import catalog, rundir
from anyformer.tasks.base import Task
from anyformer.tasks.evaluation import predict_split
from anyformer.verdict import baseline_row

OUTCOMES = "test_outcomes.safetensors"


@torch.no_grad()
def score(model: torch.nn.Module, task: Task, split: str, metric: str, batch_size: int, device: torch.device,
          precision: str) -> tuple[dict[str, float], np.ndarray | None]:
    """(the task's metrics with 'loss', per-unit outcomes of `metric` or None): the same
    pass over the split as training's evaluation, keeping what the strategy scores per
    unit. Outcomes whose mean is not the metric (a task scoring its own way) are dropped."""
    output, target, loss = predict_split(model.to(device), task, split, batch_size, device, precision)
    metrics = task.metrics(output, target)
    metrics.setdefault("loss", loss)
    units = task.strategy.per_example(output, target, metric)
    if units is None or metric not in metrics or not math.isclose(float(units.mean()), metrics[metric], rel_tol=1e-5, abs_tol=1e-9):
        return metrics, None
    return metrics, units.double().numpy()


def seed_outcomes(run_dir: Path, task: Task, metric: str, batch_size: int, device: torch.device,
                  precision: str) -> np.ndarray | None:
    """A finished seed's per-unit test outcomes: read back, or scored once from its saved
    weights (the final, or best, model the summary reports) and saved beside them."""
    path = run_dir / OUTCOMES
    if path.exists():
        found = rundir.read_tensors(path)
        return found[metric].numpy() if metric in found else None
    model, _ = catalog.load_run(run_dir)
    _, units = score(model, task, "test", metric, batch_size, device, precision)
    if units is not None:
        holder = torch.nn.Module()  # rundir writes safetensors from a module's state
        holder.register_buffer(metric, torch.from_numpy(units))
        rundir.save_weights(holder, path)
    return units


def baseline_rows(task: Task, metric: str, higher: bool, batch_size: int, device: torch.device
                  ) -> list[tuple[dict[str, Any], np.ndarray | None]]:
    """The problem's trivial baselines, fitted on the train split and scored on val and
    test as a model is: (row, per-unit test outcomes) each; rows carry no cost."""
    splits = task.splits()
    found = []
    for name, model in task.trivial_baselines(splits).items():
        test, units = score(model, task, "test", metric, batch_size, device, "fp32")
        val, _ = score(model, task, "val", metric, batch_size, device, "fp32")
        found.append((baseline_row(name, metric, higher, val, test, len(splits["test"])), units))
    return found
