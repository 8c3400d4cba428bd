"""Evaluate a model on a task's split: every batch's compacted output, then the metrics."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.runtime import autocast
from anyformer.tasks.base import Task


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
        o, t = task.compact(out, batch.target)
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
