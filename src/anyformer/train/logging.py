"""Run logging: metrics.jsonl (deterministic values only, so a resumed run writes the same
file), a rich progress bar on a terminal, and TensorBoard when it is installed."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text


class StepsPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} steps/s" if task.speed else "")


class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool = True, progress: bool = True, total: int = 0) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled, self.total = enabled, total
        self.console = Console(stderr=True)
        self.show = enabled and progress and self.console.is_terminal
        self.bar: Progress | None = None
        self.task_id = None
        self.fields = {"loss": float("nan"), "metric": None}
        self.tb = None
        if enabled:
            try:  # optional: only when tensorboard is installed
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except Exception:
                self.tb = None

    # -- metrics.jsonl
    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, size: int) -> None:
        """Drop lines written after the checkpoint being resumed (they will be rewritten)."""
        if self.enabled and self.path.exists():
            with open(self.path, "r+b") as fh:
                fh.truncate(size)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if self.tb is not None:
            prefix = record.get("split", "train")
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(f"{prefix}/{key}", value, record["step"])

    # -- progress bar
    def __enter__(self) -> "RunLogger":
        if self.show:
            self.bar = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[metric]}"),
                StepsPerSecond(), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self.bar.__enter__()
            self.task_id = self.bar.add_task("train", total=self.total, loss=float("nan"), metric="")
        return self

    def advance(self, step: int, loss: float | None = None, metric: float | None = None) -> None:
        if self.bar is None:
            return
        fields: dict[str, Any] = {}
        if loss is not None:
            fields["loss"] = loss
        if metric is not None:
            fields["metric"] = f"val {metric:.4f}"
        self.bar.update(self.task_id, completed=step, **fields)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
            self.bar = None
        if self.tb is not None:
            self.tb.flush()
