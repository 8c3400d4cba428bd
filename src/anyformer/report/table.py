"""The comparison table: on screen (rich) and as CSV."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from rich.table import Table

from anyformer.rundir import atomic_write_text

COLUMNS = [
    ("model", "model", "{}"),
    ("quality", "test", "{:.4f}"),
    ("val", "val", "{:.4f}"),
    ("params", "params", "{:,}"),
    ("flops_per_sample", "MFLOP/sample", "{:.2f}"),
    ("latency_ms", "latency ms", "{:.2f}"),
    ("train_step_ms", "train step ms", "{:.2f}"),
    ("peak_memory_bytes", "peak MiB", "{:.2f}"),
    ("steps", "steps", "{}"),
    ("train_seconds", "train s", "{:.0f}"),
]


def _fmt(key: str, fmt: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if key == "flops_per_sample":
        value = value / 1e6
    if key == "peak_memory_bytes":
        value = value / 2**20
    return fmt.format(value)


def rich_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, caption="* Pareto-optimal: quality vs latency (L) and vs parameters (P)")
    metric = rows[0]["metric"] if rows else "quality"
    for key, label, _ in COLUMNS:
        label = f"test {metric}" if key == "quality" else (f"val {metric}" if key == "val" else label)
        table.add_column(label, justify="left" if key == "model" else "right")
    table.add_column("pareto")
    for r in rows:
        marks = ("L" if r.get("pareto_latency") else "") + ("P" if r.get("pareto_params") else "")
        table.add_row(*(_fmt(k, f, r.get(k)) for k, _, f in COLUMNS), f"* {marks}" if marks else "")
    return table


CSV_KEYS = ["model", "metric", "quality", "val", "params", "params_non_embedding", "flops_per_sample",
            "latency_ms", "latency_batch", "train_step_ms", "peak_memory_bytes", "steps", "train_seconds",
            "pareto_latency", "pareto_params"]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_KEYS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    atomic_write_text(path, buf.getvalue())
