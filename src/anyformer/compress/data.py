"""The data a compression method calibrates on and is judged by: the run's own task
(training batches to calibrate, the test split's metric to judge), or for a run trained
on none (an imported checkpoint) a file of sentences, judged by how close the compressed
model's outputs stay to the original's (mean cosine per sentence)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anyformer import catalog, registry
from anyformer.errors import ConfigError, DataError
from anyformer.infer.generate import text_codec
from anyformer.runtime import autocast
from anyformer.tasks.base import Batch, Split, Task
from anyformer.tasks.evaluation import batches, evaluate, model_kwargs, outputs
from anyformer.tasks.files import existing_file, text_lines

CALIBRATION_BATCHES = 8


@dataclass
class Judged:
    """Batches to calibrate on, a latency batch, and how quality is scored."""

    calibration: list[Batch]
    example: Batch
    metric: str
    higher_is_better: bool
    task: Task | None = None
    batch_size: int = 64
    reference: torch.Tensor | None = None  # the original model's outputs (sentence data)
    held_out: Split | None = None          # the examples judged on (sentence data)

    def quality(self, model: nn.Module, device: torch.device, precision: str = "fp32") -> dict[str, float]:
        """The task's test metrics, or the mean cosine of outputs to the original model's."""
        if self.task is not None:
            return evaluate(model, self.task, "test", self.batch_size, device, precision)
        out = outputs(model, self.held_out, self.batch_size, device, precision)
        return {"cosine": float(F.cosine_similarity(out.flatten(1), self.reference.flatten(1), dim=-1).mean())}


def from_task(spec: dict[str, Any], batch_size: int, seed: int = 0) -> Judged:
    task = catalog.build_task(spec)
    train = task.splits()["train"]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    calibration = [train.batch(order[i: i + batch_size]) for i in range(0, min(len(train), CALIBRATION_BATCHES * batch_size), batch_size)]
    test = task.splits()["test"]
    example = test.batch(torch.arange(min(batch_size, len(test))))
    return Judged(calibration, example, task.primary_metric, task.higher_is_better, task, batch_size)


def from_sentences(path: str | Path, config: dict[str, Any], run_dir: str | Path, model: nn.Module,
                   device: torch.device, batch_size: int = 32) -> Judged:
    """Sentences (one a line) tokenized as the run reads text; the first half calibrates,
    the second half judges (cosine of outputs to the uncompressed model's)."""
    file = existing_file(path, "sentences file")
    sentences = [line.strip() for _, line in text_lines(file) if line.strip()]
    if len(sentences) < 4:
        raise DataError(f"{file}: {len(sentences)} sentences; give at least 4 (one a line): half calibrate, half judge")
    codec = text_codec(config, run_dir)
    max_len = int(config["model"].get("max_len") or 512)
    ids = [codec.encode(s)[:max_len] for s in sentences]
    length = max(len(i) for i in ids)
    tokens = torch.zeros(len(ids), length, dtype=torch.long)
    mask = torch.zeros(len(ids), length, dtype=torch.bool)
    for k, i in enumerate(ids):
        tokens[k, :len(i)] = torch.tensor(i)
        mask[k, :len(i)] = True
    half = len(ids) // 2
    calibrate = Split(tokens[:half], torch.zeros(half), mask[:half])
    held_out = Split(tokens[half:], torch.zeros(len(ids) - half), mask[half:])
    reference = outputs(model, held_out, batch_size, device, "fp32")
    calibration = list(batches(calibrate, batch_size))
    return Judged(calibration, held_out.batch(torch.arange(min(batch_size, len(held_out)))), "cosine", True,
                  batch_size=batch_size, reference=reference, held_out=held_out)


def judged(config: dict[str, Any], run_dir: str | Path, model: nn.Module, device: torch.device,
           data: str | None = None) -> Judged:
    """The run's task (or `data`: a task name, NAME:ARG, or a file of sentences)."""
    batch_size = int((config.get("train") or {}).get("eval_batch_size", 64))
    if data is not None and Path(data).expanduser().is_file():
        return from_sentences(data, config, run_dir, model, device)
    if data is not None:
        name, _, arg = data.partition(":")
        cls = registry.get("task", name)
        return from_task({"name": name, **(cls.parse_argument(arg) if arg else {})}, batch_size)
    if not config.get("task"):
        raise ConfigError(f"{run_dir} was trained on no task (an imported checkpoint): pass --data with a file of "
                          "sentences (one a line) or a task (NAME or NAME:ARG) to calibrate and judge on")
    return from_task(config["task"], batch_size)


@torch.no_grad()
def run_batch(model: nn.Module, batch: Batch, device: torch.device, precision: str = "fp32") -> torch.Tensor:
    batch = batch.to(device)
    with autocast(device, precision):
        return model(batch.inputs, **model_kwargs(batch))
