"""Run logging: metrics.jsonl (deterministic values only, so a resumed run writes the same
file), a rich progress bar on a terminal (plain lines when stderr is piped: a CI log, a file),
and TensorBoard when it is installed."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text


class StepsPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} steps/s" if task.speed else "")


# Piped progress: a plain line every tenth of the steps, or sooner when this many seconds pass.
PLAIN_EVERY_S = 30.0


class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool = True, progress: bool = True, total: int = 0) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled, self.total = enabled, total
        self.console = Console(stderr=True)
        self.show = enabled and progress and self.console.is_terminal
        self.plain = enabled and progress and not self.console.is_terminal
        self.last_line = (0, 0.0)  # (step, time) of the last plain line
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
        self.started = time.perf_counter()
        self.last_line = (-1, self.started)
        return self

    def _plain(self, step: int) -> None:
        """A plain progress line (step, loss, elapsed) at each tenth of the steps, the last
        step, or PLAIN_EVERY_S after the last line."""
        last, at = self.last_line
        now = time.perf_counter()
        tenth = max(1, self.total // 10)
        if step <= last or not (step % tenth == 0 or step == self.total or now - at >= PLAIN_EVERY_S):
            return
        self.last_line = (step, now)
        metric = f" {self.fields['metric']}" if self.fields["metric"] else ""
        self.console.print(f"train step {step}/{self.total} loss {self.fields['loss']:.4f}{metric} "
                           f"({now - self.started:.0f} s)", highlight=False, soft_wrap=True)

    def advance(self, step: int, loss: float | None = None, metric: float | None = None) -> None:
        fields: dict[str, Any] = {}
        if loss is not None:
            fields["loss"] = loss
        if metric is not None:
            fields["metric"] = f"val {metric:.4f}"
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.update(self.task_id, completed=step, **fields)
        elif self.plain and step > 0 and loss is not None:
            self._plain(step)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
            self.bar = None
        if self.tb is not None:
            self.tb.flush()
