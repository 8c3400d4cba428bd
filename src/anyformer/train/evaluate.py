"""Evaluate a whole run directory on its task (`anyformer eval`); a model on one split is
tasks/evaluation.py's, shared with predict."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from anyformer import catalog, rundir
from anyformer.errors import ConfigError, unknown
from anyformer.runtime import resolve_device
from anyformer.tasks.evaluation import evaluate
from anyformer.tasks.resolve import check_fits
from anyformer.train.config import run_config


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
    precision = rundir.run_precision(run_dir, config)
    valid = list(built.splits())
    results = {}
    for s in splits:
        if s not in valid:
            raise unknown("split", s, valid)
        results[s] = evaluate(model, built, s, train.get("eval_batch_size", 256), dev, precision)
    return built.name, results
