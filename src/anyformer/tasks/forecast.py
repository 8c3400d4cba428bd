"""Long-horizon forecasting on ETT-format CSVs (or series statsmodels ships), Informer /
Time-Series-Library protocol."""
from __future__ import annotations

import re
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from anyformer.errors import ConfigError, DataError, unknown
from anyformer.registry import register
from anyformer.tasks.base import Split, Task
from anyformer.tasks.files import column_index, existing_file, is_number, package_data, parse_number, read_csv
from anyformer.tasks.forecast_inputs import future, read_series_csv, scaled, series_input, window_records
from anyformer.tasks.raw import Raw

MODES = {"multivariate": "M", "univariate": "S", "M": "M", "S": "S"}
PROTOCOLS = ("auto", "ett_hour", "ett_minute", "ratio")
# Series statsmodels ships as CSV: how each is laid out and its main column.
STATSMODELS = {
    "co2": {"time": ["date"], "target": "co2"},             # weekly, gaps linearly interpolated
    "sunspots": {"time": ["YEAR"], "target": "SUNACTIVITY"},  # yearly
    "elnino": {"time": ["YEAR"], "target": "temperature", "wide": True},  # 12 month columns per row
    "macrodata": {"time": ["year", "quarter"], "target": "realgdp"},   # quarterly, 12 variables
}


# Header names a time column goes by (compared lower-cased, without spaces, '_' and '-':
# 'Date Time' of the Jena climate CSV, 'ds' of Prophet's layout).
TIME_NAMES = ("date", "time", "timestamp", "datetime", "ds", "dt")
# Non-ISO date/time spellings common in forecasting CSVs; ISO 8601 is tried first
# (datetime.fromisoformat). Only used to tell a time column from data, never to order rows.
TIME_FORMATS = ("%Y-%m", "%Y/%m/%d", "%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M:%S", "%m/%d/%Y", "%m/%d/%Y %H:%M",
                "%m/%d/%Y %H:%M:%S", "%d/%m/%Y", "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%d.%m.%Y",
                "%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%H:%M", "%H:%M:%S")


def looks_like_time(value: str) -> bool:
    """Whether `value` reads as a date or time of day (a number never does: 20200101 is data)."""
    value = value.strip()
    if not value or is_number(value):
        return False
    for parse in (datetime.fromisoformat, date.fromisoformat, time.fromisoformat):
        try:
            parse(value)
            return True
        except ValueError:
            pass
    for fmt in TIME_FORMATS:
        try:
            datetime.strptime(value, fmt)
            return True
        except ValueError:
            pass
    return False


def time_column(header: list[str], first_row: list[str]) -> int | None:
    """The column holding time stamps: one named like TIME_NAMES, else the first column when
    its first value reads as a date/time, else None (every column is data)."""
    names = [re.sub(r"[\s_-]", "", h.lower()) for h in header]
    for wanted in TIME_NAMES:
        if wanted in names:
            return names.index(wanted)
    return 0 if first_row and looks_like_time(first_row[0]) else None


def tsl_borders(protocol: str, length: int, input_len: int) -> tuple[list[int], list[int]]:
    """[start] and [end] rows of train/val/test as Time-Series-Library sets them: ETT hourly
    12/4/4 months of 30 days (Dataset_ETT_hour), 15-minute the same x4 (Dataset_ETT_minute),
    else 70/10/20 (Dataset_Custom). Val and test start `input_len` rows early so their first
    window's input is the end of the previous split."""
    if protocol in ("ett_hour", "ett_minute"):
        per_month = 30 * 24 * (4 if protocol == "ett_minute" else 1)
        b2 = [12 * per_month, 16 * per_month, 20 * per_month]
        if length < b2[-1]:
            raise DataError(
                f"protocol {protocol!r} needs {b2[-1]} rows (20 months), the series has {length}; use protocol='ratio'"
            )
        return [0, b2[0] - input_len, b2[1] - input_len], b2
    num_train, num_test = int(length * 0.7), int(length * 0.2)
    num_val = length - num_train - num_test
    return [0, num_train - input_len, length - num_test - input_len], [num_train, num_train + num_val, length]


def _interpolate_gaps(values: np.ndarray, where: str) -> np.ndarray:
    """Fill NaN runs by linear interpolation along time (co2's missing weeks)."""
    for c in range(values.shape[1]):
        col = values[:, c]
        bad = np.isnan(col)
        if bad.all():
            raise DataError(f"{where}: column {c} holds no numbers")
        if bad.any():
            idx = np.arange(len(col))
            col[bad] = np.interp(idx[bad], idx[~bad], col[~bad])
    return values


@register("task", "forecast")
class ForecastTask(Task):
    """Multi-step forecasting: the last `input_len` steps [L, C] -> the next `horizon` [H, C].
    Data: `path` to a CSV of numeric columns and at most one time column (named date, time,
    timestamp, datetime, ds or dt in any case, else the first column if it holds dates or
    times; without one every column is a series; its values are not used), or
    `source='statsmodels:co2'` (sunspots, elnino, macrodata). Splits by `protocol` ('auto':
    ETT hourly borders for ETTh* files, 15-minute for ETTm*, else 70/10/20), z-scored with
    the training rows' mean and (population) std; windows slide by 1 (`stride` thins the
    training windows only). mode 'multivariate' (all columns -> all) or 'univariate'
    (`target` -> itself). MSE / MAE on the normalised splits."""

    argument_option = "path"
    file_options = ("path",)
    raw_input = "series"

    @classmethod
    def parse_argument(cls, arg: str) -> dict[str, Any]:
        """'forecast:statsmodels:co2' / 'forecast:synthetic' name a source, anything else a file."""
        return {"source": arg} if arg.split(":", 1)[0] in ("statsmodels", "synthetic") else {"path": arg}

    problem = "forecast"
    modality = "series"
    primary_metric = "mse"
    higher_is_better = False
    paper = "Informer (Zhou et al. 2021) data protocol, as in Time-Series-Library"
    example_options = {"source": "synthetic", "input_len": 16, "horizon": 8}

    def __init__(
        self,
        path: Annotated[str | None, Field(description="CSV of numeric columns and an optional time column (date, time, timestamp, ... or a first column of dates); give this or source")] = None,
        source: Annotated[str | None, Field(description="a built-in series instead of a file: 'statsmodels:co2', 'statsmodels:sunspots', 'statsmodels:elnino', 'statsmodels:macrodata' or 'synthetic'")] = None,
        input_len: Annotated[int, Field(description="steps the model reads")] = 96,
        horizon: Annotated[int, Field(description="steps it forecasts")] = 96,
        mode: Annotated[str, Field(description="'multivariate' (every column -> every column) or 'univariate' (target -> itself)")] = "multivariate",
        target: Annotated[str | None, Field(description="the target column (default 'OT', or the statsmodels series' own); multivariate mode puts it last")] = None,
        stride: Annotated[int, Field(description="step between training windows (val / test windows always slide by 1)")] = 1,
        protocol: Annotated[str, Field(description="split borders: 'auto' (ETT hourly / 15-minute borders by file name, else 'ratio'), 'ett_hour', 'ett_minute' or 'ratio' (70/10/20)")] = "auto",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise unknown("forecast mode", mode, MODES)
        if protocol not in PROTOCOLS:
            raise unknown("forecast protocol", protocol, PROTOCOLS)
        if (path is None) == (source is None):
            raise ConfigError("task 'forecast' needs exactly one of path (a CSV file) or source ('statsmodels:co2', ...)")
        if input_len < 1 or horizon < 1 or stride < 1:
            raise ConfigError(f"task 'forecast': input_len, horizon and stride must be >= 1 (got {input_len}, {horizon}, {stride})")
        self.path, self.source, self.input_len, self.horizon = path, source, input_len, horizon
        self.mode, self.target, self.stride, self.protocol = MODES[mode], target, stride, protocol
        self._channels: int | None = None
        # Fitted at build_splits (or restored from a run): what predict scales raw series with.
        self._columns: list[str] = []
        self._time_columns: list[str] = []
        self._mean = self._std = np.zeros(0)

    # -- reading
    def _read_path(self) -> tuple[list[str], np.ndarray, str]:
        path = existing_file(self.path, "forecast CSV", "pass the path of an ETT-format CSV (a date column + numeric columns)")
        header, rows = read_csv(path)
        if not rows:
            raise DataError(f"{path}: no data rows below the header")
        first_line, first = rows[0]
        time_col = time_column(header, first)
        names = [h for i, h in enumerate(header) if i != time_col]
        self._time_columns = [] if time_col is None else [header[time_col]]
        if not names:
            raise DataError(f"{path}: only a time column ({header[time_col]!r}); add numeric columns")
        for i, (h, f) in enumerate(zip(header, first)):
            if i != time_col and not is_number(f):
                role = f"the time column is {header[time_col]!r}" if time_col is not None else "no column is named date, time, timestamp, ... nor holds dates"
                raise DataError(
                    f"{path}:{first_line}: column {h!r} holds {f!r}, not a number ({role}); every column but the time "
                    f"column must be a series of numbers: remove {h!r} from the file or name the time column 'date'"
                )
        values = np.empty((len(rows), len(names)), dtype=np.float64)
        for r, (line, fields) in enumerate(rows):
            values[r] = [parse_number(f, path, line, h) for i, (h, f) in enumerate(zip(header, fields)) if i != time_col]
        return names, values, str(path)

    def _read_statsmodels(self, name: str) -> tuple[list[str], np.ndarray, str]:
        if name not in STATSMODELS:
            raise unknown("statsmodels series", name, STATSMODELS)
        spec = STATSMODELS[name]
        path = package_data("statsmodels", "datasets", name, f"{name}.csv", extra="statsmodels")
        header, rows = read_csv(path)
        names = [h for h in header if h not in spec["time"]]
        self._time_columns = list(spec["time"])
        parse = lambda f, line, h: parse_number(f, path, line, h, finite=False) if f else float("nan")  # noqa: E731
        values = np.array([[parse(f, line, h) for h, f in zip(header, fields) if h not in spec["time"]]
                           for line, fields in rows], dtype=np.float64)
        if spec.get("wide"):  # one row per year, one column per month -> one monthly series
            values, names = values.reshape(-1, 1), [spec["target"]]
        return names, _interpolate_gaps(values, str(path)), str(path)

    def _synthetic(self) -> tuple[list[str], np.ndarray, str]:
        """Three noisy seasonal channels (for tests and smoke runs)."""
        rng = np.random.default_rng(0)
        t = np.arange(600, dtype=np.float64)
        base = np.stack([np.sin(2 * np.pi * t / 24), np.cos(2 * np.pi * t / 12), 0.01 * t], 1)
        self._time_columns = []
        return ["a", "b", "OT"], base + 0.1 * rng.standard_normal(base.shape), "synthetic"

    def read(self) -> tuple[list[str], np.ndarray, str]:
        """(column names, values [T, C], where) before column selection and scaling."""
        if self.path is not None:
            return self._read_path()
        kind, _, name = self.source.partition(":")
        if kind == "statsmodels":
            return self._read_statsmodels(name)
        if kind == "synthetic":
            return self._synthetic()
        raise unknown("forecast source (use 'statsmodels:NAME')", kind, ["statsmodels", "synthetic"])

    def _default_target(self) -> str:
        if self.source and self.source.startswith("statsmodels:"):
            return STATSMODELS.get(self.source.partition(":")[2], {}).get("target", "OT")
        return "OT"

    def model_values(self) -> tuple[list[str], np.ndarray, str]:
        """(column names, unscaled values [T, C] float64, where) in the model's column
        order: the target alone (univariate) or moved last (multivariate)."""
        names, values, where = self.read()
        target = self.target or self._default_target()
        if self.mode == "S" or self.target is not None:
            t = column_index(names, target, where, "the task option `target`")
        else:
            t = names.index(target) if target in names else None
        if self.mode == "S":
            names, values = [names[t]], values[:, [t]]
        elif t is not None:  # TSL's custom loader puts the target last
            names = [n for i, n in enumerate(names) if i != t] + [names[t]]
            values = np.concatenate([np.delete(values, t, 1), values[:, [t]]], 1)
        return names, values, where

    # -- splits
    def build_splits(self) -> dict[str, Split]:
        names, values, where = self.model_values()
        protocol = self.protocol
        if protocol == "auto":
            stem = Path(where).name
            protocol = "ett_hour" if stem.startswith("ETTh") else "ett_minute" if stem.startswith("ETTm") else "ratio"
        b1, b2 = tsl_borders(protocol, len(values), self.input_len)
        train = values[b1[0]:b2[0]]
        mean, std = train.mean(0), train.std(0)
        std[std == 0] = 1.0  # a constant column stays 0 after centring
        self._columns, self._mean, self._std = names, mean, std
        series = torch.tensor((values - mean) / std, dtype=torch.float32)
        self._channels = series.shape[1]
        span = self.input_len + self.horizon
        # A split's positions in `records` are its windows' start rows.
        splits, self._parts = {}, {}
        for i, name in enumerate(("train", "val", "test")):
            first = max(b1[i], 0)
            segment = series[first:b2[i]]
            if len(segment) < span:
                raise DataError(
                    f"{where}: the {name} split has {len(segment)} steps, fewer than input_len + horizon = {span}; "
                    "shorten input_len / horizon or give a longer series"
                )
            # Windows as strided views of one tensor: no copy of the (overlapping) windows.
            step = self.stride if name == "train" else 1
            windows = segment.unfold(0, span, step).transpose(1, 2)
            splits[name] = Split(windows[:, :self.input_len], windows[:, self.input_len:])
            self._parts[name] = first + step * torch.arange(len(windows), dtype=torch.int64)
        return splits

    # -- predict: the columns and the training rows' scaler
    def preprocessing(self) -> dict[str, Any]:
        self.splits()
        return {"columns": self._columns, "time_columns": self._time_columns, "mean": self._mean.tolist(),
                "std": self._std.tolist(), "input_len": self.input_len, "horizon": self.horizon, "mode": self.mode}

    def restore(self, state: dict[str, Any]) -> None:
        self._columns, self._time_columns = list(state["columns"]), list(state["time_columns"])
        self._mean = np.array(state["mean"], dtype=np.float64)
        self._std = np.array(state["std"], dtype=np.float64)
        self._channels = len(self._columns)

    def records(self) -> list[Raw]:
        """Every window of the series: value its input rows [input_len, C], label the next
        horizon rows [horizon, C] (unscaled, views of one array)."""
        _, values, where = self.model_values()
        return window_records(values, where, self.input_len, self.horizon)

    def read_inputs(self, path: Path) -> list[Raw]:
        """One record: the last input_len rows of a CSV laid out as the training file."""
        return [read_series_csv(path, self._columns, self.input_len)]

    def encode(self, records: list[Raw]) -> tuple[torch.Tensor, None]:
        """The scaled last input_len rows of each record's series: [N, input_len, C] float32."""
        arrays = [series_input(r, self._columns, self.input_len) for r in records]
        return scaled(arrays, self._mean, self._std), None

    def targets(self, records: list[Raw]) -> torch.Tensor:
        """The scaled future of each window: [N, horizon, C] float32."""
        return scaled([future(r, self.horizon, len(self._columns)) for r in records], self._mean, self._std)

    def output_names(self) -> list[str]:
        return list(self._columns)

    def describe(self, output: torch.Tensor, records: list[Raw]) -> list[dict[str, Any]]:
        """{forecast: {column: [value per step]}} in the data's units: output [N, H, C] * std
        + mean, in float64 (float32 would round large values such as prices)."""
        values = output.double() * torch.from_numpy(self._std) + torch.from_numpy(self._mean)
        return [{"forecast": dict(zip(self._columns, v.T.tolist()))} for v in values]

    def channels(self) -> int:
        if self._channels is None:
            self.splits()
        return int(self._channels)

    def train_defaults(self) -> dict[str, Any]:
        return {"steps": 2000, "batch_size": 32, "lr": 5e-4, "warmup_steps": 100, "eval_every": 250,
                "early_stopping": 3, "weight_decay": 0.01}

    def model_defaults(self) -> dict[str, Any]:
        # The head's channel count comes from the encoder's hint: C for 'step', 1 for
        # channel-independent 'patch', per-token for 'variate'.
        return {
            # RevIN: ETT-style series drift between splits; per-window normalisation is
            # what the strong published baselines (PatchTST, iTransformer) use too.
            "encoder": {"name": "series", "channels": self.channels(), "mode": "step", "revin": True},
            "head": {"name": "forecast", "horizon": self.horizon},
            "max_len": self.input_len,
        }

    def required_options(self) -> dict[str, dict[str, Any]]:
        return {"encoder": {"channels": self.channels()}, "head": {"horizon": self.horizon}}
