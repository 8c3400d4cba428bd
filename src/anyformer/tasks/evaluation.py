"""A model's outputs and metrics on one split of a task, batch by batch: what training's
evaluation, compare's scoring and `predict --split` share (the same batches in the same
order, so a split scored twice gives the same numbers bit for bit)."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.runtime import autocast
from anyformer.tasks.base import Split, Task


def model_kwargs(batch) -> dict:
    return {"mask": batch.mask} if batch.mask is not None else {}


def batches(data: Split, batch_size: int):
    """The split's batches in order: positions [0, batch_size), [batch_size, 2 batch_size), ..."""
    for start in range(0, len(data), batch_size):
        yield data.batch(torch.arange(start, min(start + batch_size, len(data))))


@torch.no_grad()
def predict_split(model: nn.Module, task: Task, split: str, batch_size: int, device: torch.device,
                  precision: str = "auto", data: Split | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(compacted outputs, targets, mean loss) of `model` on `split` (or on `data`, a split
    of that name built elsewhere: predict's from raw records), in batches of `batch_size`,
    run in `precision` ('auto' | 'fp32' | 'bf16', resolved by anyformer.runtime); the model
    is left in the mode it came in."""
    data = task.splits()[split] if data is None else data
    was_training = model.training
    model.eval()
    outputs, targets, losses, counts = [], [], 0.0, 0
    for batch in batches(data, batch_size):
        batch = batch.to(device)
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
             precision: str = "auto", data: Split | None = None) -> dict[str, float]:
    """The task's metrics (and 'loss') of `model` on `split` (see `predict_split`)."""
    output, target, loss = predict_split(model, task, split, batch_size, device, precision, data)
    result = task.metrics(output, target)
    result.setdefault("loss", loss)
    return result


@torch.no_grad()
def outputs(model: nn.Module, data: Split, batch_size: int, device: torch.device, precision: str = "auto") -> torch.Tensor:
    """The model's raw outputs (float32, on the CPU) on every example of `data`, in order."""
    was_training = model.training
    model.eval()
    out = []
    for batch in batches(data, batch_size):
        batch = batch.to(device)
        with autocast(device, precision):
            out.append(model(batch.inputs, **model_kwargs(batch)).float().cpu())
    model.train(was_training)
    return torch.cat(out)
