"""Raw inputs of the forecast task for `predict`: the windows of the series it trained on,
a user's CSV in the training file's layout, arrays [T, C], and their scaling exactly as
`ForecastTask.build_splits` scaled them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from anyformer.errors import DataError, suggest
from anyformer.tasks.files import parse_number, read_csv
from anyformer.tasks.raw import Raw

# Windows scaled per block, so a split of 70k windows never holds all of them in float64.
CHUNK = 4096


def window_records(values: np.ndarray, where: str, input_len: int, horizon: int) -> list[Raw]:
    """Every window of `values` [T, C]: record i holds rows [i, i + input_len) as its value
    and the next `horizon` rows as its label (the future it is scored against), both views
    of `values` (no copy: a series may have 70k rows). Rows count from 0."""
    span = input_len + horizon
    return [Raw(values[i:i + input_len], f"{where} rows {i}-{i + span - 1}", values[i + input_len:i + span])
            for i in range(len(values) - span + 1)]


def series_input(record: Raw, columns: list[str], input_len: int) -> np.ndarray:
    """The last `input_len` rows [input_len, C] of a record's series [T, C] (C in the run's
    column order; [T] when the run has one column), float64, or a DataError naming it."""
    try:
        array = np.asarray(record.value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{record.where}: not an array of numbers; give a series [T, {len(columns)}] "
                        f"(columns {', '.join(columns)})") from None
    if array.ndim == 1 and len(columns) == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2 or array.shape[1] != len(columns):
        raise DataError(f"{record.where}: a series of shape {list(array.shape)}; the run reads [T, {len(columns)}] "
                        f"(columns {', '.join(columns)}, in that order)")
    if len(array) < input_len:
        raise DataError(f"{record.where}: {len(array)} rows; the run reads the last {input_len}: give at least {input_len}")
    array = array[len(array) - input_len:]
    if not np.isfinite(array).all():
        raise DataError(f"{record.where}: a missing or infinite value in the last {input_len} rows; fill it")
    return array


def read_series_csv(path: Path, columns: list[str], input_len: int) -> Raw:
    """One record of a CSV in the training file's layout (the run's columns by name, any
    time or extra column ignored): its last `input_len` rows [input_len, C], float64."""
    header, rows = read_csv(path, what="forecast input CSV")
    for column in columns:
        if column not in header:
            raise DataError(f"{path}: no column {column!r}{suggest(column, header)}; the run reads the columns "
                            f"{', '.join(columns)}: give a CSV laid out as the training file")
    if len(rows) < input_len:
        raise DataError(f"{path}: {len(rows)} data rows; the run reads the last {input_len}: give at least {input_len}")
    tail = rows[len(rows) - input_len:]
    at = [header.index(c) for c in columns]
    values = np.array([[parse_number(fields[i], path, line, header[i]) for i in at] for line, fields in tail],
                      dtype=np.float64)
    return Raw(values, f"{path}:{tail[0][0]}-{tail[-1][0]}")


def scaled(arrays: list[np.ndarray], mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """Stacked arrays [N, T, C] z-scored as training did: (values - mean) / std in float64,
    then cast to float32 by the same call (bit for bit the tensors build_splits made)."""
    if not arrays:
        return torch.zeros(0, 0, len(mean))
    out = torch.empty((len(arrays), *arrays[0].shape), dtype=torch.float32)
    for start in range(0, len(arrays), CHUNK):
        block = np.stack(arrays[start:start + CHUNK])
        out[start:start + len(block)] = torch.tensor((block - mean) / std, dtype=torch.float32)
    return out


def future(record: Raw, horizon: int, channels: int) -> np.ndarray:
    """A record's label: the next `horizon` rows [horizon, C] it is scored against."""
    label: Any = record.label
    if label is None:
        raise DataError(f"{record.where}: no future values to score the forecast against")
    label = np.asarray(label, dtype=np.float64)
    if label.shape != (horizon, channels):
        raise DataError(f"{record.where}: future values of shape {list(label.shape)}, the run forecasts [{horizon}, {channels}]")
    return label
