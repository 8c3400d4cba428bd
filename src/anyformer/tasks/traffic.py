"""Traffic forecasting on a sensor graph (METR-LA / PEMS-BAY layout, GMAN's protocol), with
masked metrics: a reading of 0 is missing."""
from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from anyformer.errors import ConfigError, DataError
from anyformer.registry import register
from anyformer.tasks.base import Split, Task
from anyformer.tasks.problems import Problem
from anyformer.tasks.traffic_data import STEP_MINUTES, SensorData, gaussian_weights, generated_sensors, laplacian_features
from anyformer.tasks.traffic_files import read_sensor_data

SPLITS = ("train", "val", "test")
FRACTIONS = (0.7, 0.1, 0.2)


def _valid(target: torch.Tensor) -> torch.Tensor:
    return target != 0


class HeldLastReading(nn.Module):
    """The trivial forecast: each sensor's last input reading held over the horizon, in the
    data's units (a missing last reading, 0 once scaled, is the training mean). inputs
    {'readings': [B, P, N] scaled} -> [B, Q, N]."""

    def __init__(self, mean: float, std: float, horizon: int) -> None:
        super().__init__()
        self.mean, self.std, self.horizon = mean, std, horizon

    def forward(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        last = inputs["readings"][:, -1:] * self.std + self.mean
        return last.expand(-1, self.horizon, -1)


class HistoricalAverage(nn.Module):
    """GMAN's HA baseline: each sensor's mean training reading at the same step of the week
    (day of week x step of day), missing readings left out; a slot the training data never
    saw falls back to the sensor's mean. inputs {'time': [B, P + Q, 2] (step of day, day
    of week)} -> [B, Q, N]."""

    def __init__(self, table: torch.Tensor, steps_per_day: int, horizon: int) -> None:
        super().__init__()
        self.register_buffer("table", table)  # [7 * steps_per_day, N]
        self.steps_per_day, self.horizon = steps_per_day, horizon

    def forward(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        future = inputs["time"][:, -self.horizon:]
        return self.table[future[..., 1] * self.steps_per_day + future[..., 0]]

    @classmethod
    def fit(cls, time: torch.Tensor, target: torch.Tensor, steps_per_day: int) -> "HistoricalAverage":
        """From training windows: future times [W, Q, 2] and their readings [W, Q, N]."""
        slot = (time[..., 1] * steps_per_day + time[..., 0]).reshape(-1)
        values = target.double().reshape(len(slot), -1)
        seen = (values != 0).double()
        slots = 7 * steps_per_day
        total = torch.zeros(slots, values.shape[1], dtype=torch.float64).index_add_(0, slot, values)
        count = torch.zeros_like(total).index_add_(0, slot, seen)
        fallback = values.sum(0) / seen.sum(0).clamp_min(1)
        table = torch.where(count > 0, total / count.clamp_min(1), fallback)
        return cls(table.float(), steps_per_day, int(target.shape[1]))


@register("problem", "masked-forecast")
class MaskedForecast(Problem):
    """Forecasting with missing targets (GMAN, Zheng et al. 2020, and DCRNN's protocol): a
    target of 0 is missing and counts in no loss or metric. Loss: masked MAE; metrics: masked
    MAE, RMSE and MAPE (%). output and target [N, H, C] in the data's units."""

    paper = "GMAN: A Graph Multi-Attention Network for Traffic Prediction (Zheng et al. 2020)"
    head_family = "forecast"
    primary_metric = "mae"
    metric_directions = {"mae": False, "rmse": False, "mape": False, "loss": False}
    metric_ranges = {m: (0.0, math.inf) for m in metric_directions}
    test_unit = "window"

    def example_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Forecasts [6, 4, 3] and readings near 50 with a quarter of them missing (0)."""
        target = 50 + 10 * torch.randn(6, 4, 3, generator=generator)
        target[torch.rand(6, 4, 3, generator=generator) < 0.25] = 0
        return 50 + 10 * torch.randn(6, 4, 3, generator=generator), target

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = _valid(target)
        err = (output - target.to(output.dtype)).abs() * valid
        return err.sum() / valid.sum().clamp_min(1)

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        valid = _valid(target)
        count = max(int(valid.sum()), 1)
        err = (output.double() - target.double()) * valid
        mape = (err.abs() / target.double().abs().where(valid, torch.ones_like(target, dtype=torch.float64))).sum()
        return {"mae": float(err.abs().sum() / count), "rmse": float((err.pow(2).sum() / count).sqrt()),
                "mape": float(100 * mape / count)}

    def per_example(self, output: torch.Tensor, target: torch.Tensor, metric: str) -> torch.Tensor | None:
        """Each window's masked absolute error over the split's mean valid count per window,
        so their mean is the split's masked MAE."""
        if metric not in ("mae", "loss"):
            return None
        valid = _valid(target)
        err = ((output.double() - target.double()).abs() * valid).flatten(1).sum(1)
        return err * len(target) / max(int(valid.sum()), 1)

    def describe(self, output: torch.Tensor, names: list[str]) -> list[dict[str, Any]]:
        """{forecast: {sensor: [value per step]}} per example; output [N, H, C]."""
        return [{"forecast": dict(zip(names, o.T.tolist()))} for o in output.float()]


@register("task", "traffic")
class TrafficTask(Task):
    """Forecast every sensor of a road graph: the last `input_len` 5-minute steps of all N
    sensors -> the next `horizon` (GMAN: 12 -> 12). With no `path`: generated speeds on a
    random road graph (traffic_data.py: regional daily / weekly rush hours, diffusion over the
    graph, incidents that reach the neighbours a few steps later, some missing readings).
    With `path`: a CSV whose first column is the time stamp and then one column per sensor
    (METR-LA layout; an empty cell or 0 is missing) and `graph`: an N x N adjacency CSV
    (header: the sensor ids) or a from,to,cost distance list, weighted by DCRNN's Gaussian
    kernel with `threshold`. Splits 70/10/20 by time; inputs scaled by the training readings'
    mean and std (missing inputs at the mean); targets in the data's units; masked MAE / RMSE /
    MAPE. Inputs: {"readings", "time" (slot of the day, day of the week), "spatial" (the
    graph's `spatial_size` Laplacian eigenvectors)} for encoder 'sensor-readings'."""

    problem = "masked-forecast"
    modality = "spatiotemporal"
    paper = "GMAN: A Graph Multi-Attention Network for Traffic Prediction (Zheng et al. 2020); DCRNN (Li et al. 2018) data"
    argument_option = "path"
    file_options = ("path", "graph")
    example_options = {"sensors": 5, "days": 2, "input_len": 3, "horizon": 2, "spatial_size": 2}

    def __init__(
        self,
        path: Annotated[str | None, Field(description="sensor CSV: a time stamp column, then one column per sensor; none: generated")] = None,
        graph: Annotated[str | None, Field(description="the sensors' graph: an N x N adjacency CSV or a from,to,cost distance list (needed with path)")] = None,
        input_len: Annotated[int, Field(ge=1, description="past steps the model reads (P)")] = 12,
        horizon: Annotated[int, Field(ge=1, description="future steps it forecasts (Q)")] = 12,
        spatial_size: Annotated[int, Field(ge=1, description="Laplacian eigenvectors per sensor (the spatial embedding's input)")] = 8,
        threshold: Annotated[float, Field(ge=0.0, le=1.0, description="Gaussian-kernel weights below this are no edge (DCRNN: 0.1)")] = 0.1,
        sensors: Annotated[int, Field(ge=2, description="generated sensors")] = 36,
        days: Annotated[int, Field(ge=1, description="generated days of 5-minute readings")] = 28,
        seed: Annotated[int, Field(description="seed of the generated graph and readings")] = 0,
    ) -> None:
        super().__init__()
        if (path is None) != (graph is None):
            raise ConfigError("task 'traffic' reads a sensor CSV together with its graph: give both path and graph, or neither (generated data)")
        self.path, self.graph = path, graph
        self.input_len, self.horizon, self.spatial_size, self.threshold = input_len, horizon, spatial_size, threshold
        self.num_sensors, self.days, self.seed = sensors, days, seed
        self.sensor_ids: list[str] = []
        self.mean, self.std = 0.0, 1.0
        self.steps_per_day = 24 * 60 // STEP_MINUTES

    def read(self) -> tuple[SensorData, np.ndarray, str]:
        """(the sensor data, its graph's weights [N, N], where)."""
        if self.path is None:
            data = generated_sensors(self.num_sensors, self.days, self.seed)
            return data, gaussian_weights(data.sensors, data.distances, self.threshold), "generated traffic"
        data, adjacency = read_sensor_data(self.path, self.graph)
        weights = adjacency if adjacency is not None else gaussian_weights(data.sensors, data.distances, self.threshold)
        return data, weights, str(self.path)

    def build_splits(self) -> dict[str, Split]:
        data, weights, where = self.read()
        values = data.readings
        self.sensor_ids = list(data.sensors)
        step = (data.stamps[1] - data.stamps[0]).total_seconds()
        self.steps_per_day = int(round(86400 / step))
        span = self.input_len + self.horizon
        T = len(values)
        num_train, num_test = int(T * FRACTIONS[0]), int(T * FRACTIONS[2])
        borders = [0, num_train, T - num_test, T]
        train = values[:num_train]
        seen = train[train != 0]
        if seen.size == 0:
            raise DataError(f"{where}: every training reading is 0 (missing); give readings with values")
        self.mean, self.std = float(seen.mean()), float(seen.std()) or 1.0
        scaled = np.where(values != 0, (values - self.mean) / self.std, 0.0)
        slot = np.array([(s.hour * 3600 + s.minute * 60 + s.second) // int(step) for s in data.stamps])
        day = np.array([s.weekday() for s in data.stamps])
        time = torch.tensor(np.stack([slot, day], -1), dtype=torch.long)
        x = torch.tensor(scaled, dtype=torch.float32)
        y = torch.tensor(values, dtype=torch.float32)
        spatial = torch.from_numpy(laplacian_features(weights, self.spatial_size))
        splits = {}
        for i, name in enumerate(SPLITS):
            lo, hi = borders[i], borders[i + 1]
            if hi - lo < span:
                raise DataError(f"{where}: the {name} split has {hi - lo} steps, fewer than input_len + horizon = {span}; "
                                "give more readings or shorten input_len / horizon")
            windows = hi - lo - span + 1
            readings = x[lo:hi].unfold(0, self.input_len, 1)[:windows].transpose(1, 2)
            target = y[lo + self.input_len:hi].unfold(0, self.horizon, 1)[:windows].transpose(1, 2)
            times = time[lo:hi].unfold(0, span, 1).transpose(1, 2)
            inputs = {"readings": readings, "time": times, "spatial": spatial.expand(windows, -1, -1)}
            splits[name] = Split(inputs, target)
        return splits

    def model_defaults(self) -> dict[str, Any]:
        return {"encoder": {"name": "sensor-readings", **self._encoder_facts()},
                "head": {"name": "forecast", "horizon": self.horizon}, "max_len": self.input_len}

    def _encoder_facts(self) -> dict[str, Any]:
        self.splits()
        return {"sensors": len(self.sensor_ids), "horizon": self.horizon, "spatial_size": self.spatial_size,
                "steps_per_day": self.steps_per_day, "mean": self.mean, "std": self.std}

    def required_options(self) -> dict[str, dict[str, Any]]:
        return {"encoder": self._encoder_facts(), "head": {"horizon": self.horizon}}

    def trivial_baselines(self, splits: dict[str, Split]) -> dict[str, nn.Module]:
        """Held last reading (a 5-minute forecast is hard to beat) and the historical
        average of the same step of the week (GMAN's HA)."""
        train = splits["train"]
        ha = HistoricalAverage.fit(train.inputs["time"][:, self.input_len:], train.target, self.steps_per_day)
        return {"last value": HeldLastReading(self.mean, self.std, self.horizon), "historical average": ha}

    def baseline_preset(self) -> str:
        return "gman"

    def train_defaults(self) -> dict[str, Any]:
        return {"steps": 1500, "batch_size": 32, "lr": 1e-3, "warmup_steps": 50, "eval_every": 250}

    def output_names(self) -> list[str]:
        return list(self.sensor_ids)

    def preprocessing(self) -> dict[str, Any]:
        self.splits()
        return {"sensors": self.sensor_ids, "mean": self.mean, "std": self.std, "steps_per_day": self.steps_per_day}

    def restore(self, state: dict[str, Any]) -> None:
        self.sensor_ids = [str(s) for s in state["sensors"]]
        self.mean, self.std, self.steps_per_day = float(state["mean"]), float(state["std"]), int(state["steps_per_day"])
