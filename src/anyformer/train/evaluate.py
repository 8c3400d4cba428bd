"""Evaluate a model on a task's split: every batch's compacted output, then the metrics;
and a whole run directory on its task (`anyformer eval`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from anyformer import catalog, rundir
from anyformer.errors import ConfigError, unknown
from anyformer.runtime import autocast, resolve_device
from anyformer.tasks.base import Task
from anyformer.tasks.resolve import check_fits
from anyformer.train.config import run_config


def model_kwargs(batch) -> dict:
    return {"mask": batch.mask} if batch.mask is not None else {}


@torch.no_grad()
def predict_split(model: nn.Module, task: Task, split: str, batch_size: int, device: torch.device,
                  precision: str = "auto") -> tuple[torch.Tensor, torch.Tensor, float]:
    """(compacted outputs, targets, mean loss) of `model` on `split`, in batches of
    `batch_size`, run in `precision` ('auto' | 'fp32' | 'bf16', resolved by anyformer.runtime);
    the model is left in the mode it came in."""
    data = task.splits()[split]
    was_training = model.training
    model.eval()
    outputs, targets, losses, counts = [], [], 0.0, 0
    for start in range(0, len(data), batch_size):
        batch = data.batch(torch.arange(start, min(start + batch_size, len(data)))).to(device)
        with autocast(device, precision):
            out = model(batch.inputs, **model_kwargs(batch))
        out = out.float()
        losses += float(task.loss(out, batch.target)) * len(batch)
        counts += len(batch)
        o, t = task.compact(out, batch.target, split=split)
        outputs.append(o.cpu())
        targets.append(t.cpu())
    model.train(was_training)
    return torch.cat(outputs), torch.cat(targets), losses / max(counts, 1)


def evaluate(model: nn.Module, task: Task, split: str, batch_size: int, device: torch.device,
             precision: str = "auto") -> dict[str, float]:
    """The task's metrics (and 'loss') of `model` on `split` (see `predict_split`)."""
    output, target, loss = predict_split(model, task, split, batch_size, device, precision)
    result = task.metrics(output, target)
    result.setdefault("loss", loss)
    return result


def evaluate_run(run_dir: str | Path, splits: list[str], device: str = "auto",
                 task: str | None = None) -> tuple[str, dict[str, dict[str, Any]]]:
    """(task name, {split: metrics}) of a run directory's model, on the task it was trained
    on or on `task` (a NAME or NAME:ARG), which a run imported from Hugging Face needs: it
    was trained on none. The model must fit `task` (its head's problem, classes, ...)."""
    model, config = catalog.load_run(run_dir)
    spec = task if task is not None else config.get("task")
    if spec is None:
        source = (config.get("imported") or {}).get("path", "elsewhere")
        raise ConfigError(f"{run_dir} was imported from {source} and trained on no task: pass --task NAME "
                          "(see `anyformer list task`) to evaluate it on one")
    built = catalog.build_task(run_config({"task": spec}).task)
    if task is not None:
        check_fits(config["model"], built)
    dev = resolve_device(device)
    model.to(dev)
    train = config.get("train") or {}
    # The precision the run was trained and evaluated in (what `auto` chose then).
    summary = Path(run_dir) / "summary.json"
    precision = rundir.read_json(summary).get("precision") if summary.exists() else None
    precision = precision or train.get("precision", "auto")
    valid = list(built.splits())
    results = {}
    for s in splits:
        if s not in valid:
            raise unknown("split", s, valid)
        results[s] = evaluate(model, built, s, train.get("eval_batch_size", 256), dev, precision)
    return built.name, results
