"""tabular-csv on raw rows (`predict`): the run's CSV read again row by row, users' .csv and
.jsonl files and {column: value} rows, and rows turned into the numeric and categorical
tensors training built, with the train statistics and category codes the run saved."""
from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anyformer.errors import DataError, suggest
from anyformer.tasks.files import existing_file
from anyformer.tasks.raw import Raw, csv_records, jsonl_records
from anyformer.tasks.tabular_columns import parse_value, unique_names

KNOWN_SHOWN = 5  # category values an unseen-value error lists


def table_rows(path: Path, encoding: str = "utf-8") -> list[Raw]:
    """One Raw {column: field (stripped)} per data row of a CSV, blank rows skipped, the
    header names made unique as training makes them ('x', 'x.1')."""
    return csv_records(path, encoding, names=unique_names)[1]


def spelling(value: Any, where: str, column: str) -> str:
    """A field as the CSV reader spells it: text stripped, None blank (missing), a number
    str(number) (what a CSV writer writes; it parses back to the same float)."""
    if isinstance(value, str):
        return value.strip()
    if value is None:
        return ""
    if isinstance(value, numbers.Real):
        return str(value)
    raise DataError(f"{where}: column {column!r} holds a {type(value).__name__}; give a number, a string or null")


def spelled_row(row: Raw) -> dict[str, str]:
    """A row's {column: field} with every value spelled as a CSV field (`spelling`)."""
    if not isinstance(row.value, dict):
        raise DataError(f"{row.where}: expected a row {{column: value}}, got {type(row.value).__name__}; "
                        "give one dict per row")
    return {str(k): spelling(v, row.where, str(k)) for k, v in row.value.items()}


def input_rows(path: Path, encoding: str = "utf-8") -> list[Raw]:
    """The rows of a user's .csv or .jsonl file (JSON numbers spelled as a CSV spells them)."""
    path = existing_file(path, "input file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return table_rows(path, encoding)
    if suffix == ".jsonl":
        return [Raw(spelled_row(r), r.where) for r in jsonl_records(path, encoding)]
    raise DataError(f"{path}: not a table file; give a .csv (a header row, then one row per example) "
                    "or a .jsonl (one JSON object per line)")


def _column(rows: list[dict[str, str]], where: list[str], name: str, columns: list[str]) -> list[str]:
    for row, w in zip(rows, where):
        if name not in row:
            raise DataError(f"{w}: no column {name!r}{suggest(name, list(row))}; the run reads the columns "
                            f"{', '.join(columns)}: give each of them (blank when a value is missing)")
    return [row[name] for row in rows]


def numeric_features(rows: list[dict[str, str]], where: list[str], columns: list[str],
                     stats: list[tuple[float, float]], every: list[str]) -> torch.Tensor:
    """float32 [N, k]: each numeric column z-scored with the train (mean, std) as
    TabularCSVTask._normalised computes it (float64, then float32; missing and infinite 0)."""
    x = np.empty((len(rows), len(columns)), dtype=np.float32)
    for j, (name, (mean, std)) in enumerate(zip(columns, stats)):
        fields = _column(rows, where, name, every)
        col = np.empty(len(fields), dtype=np.float64)
        for i, value in enumerate(fields):
            v = parse_value(value)
            if v is None:
                raise DataError(f"{where[i]}: column {name!r} holds {value!r}, not a number (the run read {name!r} "
                                "as numbers); give a number, or leave it blank when it is missing")
            col[i] = v
        finite = np.isfinite(col)
        z = col - mean
        z /= std if std > 0 else 1.0
        z[~finite] = 0.0
        x[:, j] = z
    return torch.from_numpy(x)


def category_key(value: str) -> str:
    """The spelling Column.code gives a value: a number as repr(float), text as it is."""
    x = parse_value(value)
    return value if x is None else repr(x)


def categorical_features(rows: list[dict[str, str]], where: list[str], columns: list[str],
                         codes: list[dict[str, int]], every: list[str]) -> torch.Tensor:
    """int64 [N, c]: each categorical value's code as training gave it (0: absent from the
    train split); a value the training file never held is a DataError naming the row."""
    out = np.empty((len(rows), len(columns)), dtype=np.int64)
    for j, (name, known) in enumerate(zip(columns, codes)):
        for i, value in enumerate(_column(rows, where, name, every)):
            code = known.get(category_key(value))
            if code is None:
                shown = ", ".join(repr(k) for k in list(known)[:KNOWN_SHOWN])
                more = f", ... ({len(known)} in all)" if len(known) > KNOWN_SHOWN else ""
                raise DataError(f"{where[i]}: column {name!r} holds {value!r}, a value the run never saw in training "
                                f"(it knows {shown}{more}); give one of the values it knows")
            out[i, j] = code
    return torch.from_numpy(out)
