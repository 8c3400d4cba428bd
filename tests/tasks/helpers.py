"""Shared checks for the task tests: a small model fitted to a task runs and its loss is finite."""
from __future__ import annotations

import csv

import torch

import anyformer as af
from anyformer.tasks.base import Task
from anyformer.tasks.resolve import model_for_task

SMALL = {"dim": 32, "depth": 1, "heads": 4}


def check_model_fits(task: Task, source=None, split: str = "train", **overrides) -> torch.Tensor:
    """Build the task's default model (tiny), run one batch of `split`, return the loss."""
    cfg = model_for_task(source, task, **{**SMALL, **overrides})
    model = af.create(cfg).eval()
    batch = task.splits()[split].batch(torch.arange(min(2, len(task.splits()[split]))))
    with torch.no_grad():
        out = model(batch.inputs, batch.mask)
        loss = task.loss(out, batch.target)
    assert torch.isfinite(loss), loss
    stats, target = task.compact(out, batch.target)
    metrics = task.metrics(stats, target)
    assert metrics and all(isinstance(v, float) for v in metrics.values())
    return loss


def write_csv(path, header, rows) -> str:
    """A small CSV file for a loader test; returns its path as a string."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return str(path)
