"""How a verdict is shown: the table `anyformer compare` prints, and results.csv (one flat
line per row)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from anyformer.report.results import describe_test_set
from anyformer.rundir import atomic_write_text
from anyformer.verdict.noise import finite


def _num(value: Any, fmt: str) -> str:
    return fmt.format(value) if finite(value) else "-"


def results_table(results: dict[str, Any]) -> Table:
    """The ranked rows on screen: mean with its interval, delta, tie, cost, steps, fronts,
    flags; the seeds, test-set size and methods in the title and caption."""
    rows, metric = results["rows"], results["metric"]
    models = sum(not r["baseline"] for r in rows)
    table = Table(title=f"{results['task']}: {models} models x {results['seeds']} seed{'s' if results['seeds'] != 1 else ''}, n_test {describe_test_set(results)}",
                  caption=f"[95% interval]: {results['interval_method']}. = tied with the best: {results['tie_test']}. "
                          "* Pareto-optimal beyond the noise: quality vs latency (L), vs parameters (P).")
    for label in ("model", f"test {metric} [95%]", "delta", "tied", "params", "MFLOP/sample", "latency ms [min-max]",
                  "peak MiB", "steps", "pareto", "flags"):
        table.add_column(label, justify="left" if label in ("model", "flags") else "right")
    for r in rows:
        latency = "-" if r.get("latency_ms") is None else (
            f"{r['latency_ms']:.2f} [{_num(r.get('latency_ms_low'), '{:.2f}')}-{_num(r.get('latency_ms_high'), '{:.2f}')}]")
        marks = ("L" if r.get("pareto_latency") else "") + ("P" if r.get("pareto_params") else "")
        mib = None if r.get("peak_memory_bytes") is None else r["peak_memory_bytes"] / 2**20
        table.add_row(
            f"{r['model']} (baseline)" if r["baseline"] else r["model"] + (" (recommended)" if r.get("recommended") else ""),
            f"{_num(r['quality'], '{:.4f}')} [{_num(r['quality_low'], '{:.4f}')}, {_num(r['quality_high'], '{:.4f}')}]",
            _num(r["delta"], "{:+.4f}"), "=" if r["tied_with_best"] else "", _num(r.get("params"), "{:,}"),
            _num(None if r.get("flops_per_sample") is None else r["flops_per_sample"] / 1e6, "{:.2f}"),
            latency, _num(mib, "{:.2f}"), _num(r.get("steps"), "{}"), f"* {marks}" if marks else "", "; ".join(r["flags"]))
    return table


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """One CSV line of a row: nested fields spread into columns (quality_seed0.., the
    per-split metrics as split_metric), flags joined."""
    flat = {k: v for k, v in row.items() if k not in ("seeds", "all_metrics", "flags")}
    flat["flags"] = "; ".join(row.get("flags", []))
    for i, s in enumerate(row.get("seeds", [])):
        flat[f"quality_seed{i}"] = s["quality"]
    for split, values in (row.get("all_metrics") or {}).items():
        for name, v in values.items():
            flat[f"{split}_{name}"] = v
    return flat


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    flats = [flat_row(r) for r in rows]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for f in flats:
        writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in f.items()})
    atomic_write_text(path, buf.getvalue())
