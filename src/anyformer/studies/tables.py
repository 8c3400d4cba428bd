"""A study's rows as the terminal shows them (a rich table) and as files (JSON beside CSV)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from anyformer import rundir


def cell(value: Any) -> str:
    """A value as a table shows it: integers with thousands separators, floats to 4 digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], title: str, caption: str | None = None) -> Table:
    """`columns`: (row key, heading); text columns left, numbers right."""
    shown = Table(title=title, caption=caption)
    for key, heading in columns:
        numeric = any(isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) for r in rows)
        shown.add_column(heading, justify="right" if numeric else "left")
    for r in rows:
        shown.add_row(*(cell(r.get(key)) for key, _ in columns))
    return shown


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """The rows' `columns` as CSV (a missing or non-finite value empty), written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None or (isinstance(r.get(k), float) and not math.isfinite(r[k])) else r[k]
                         for k in columns})
    rundir.atomic_write_text(path, buffer.getvalue())
