"""Sensor readings on a road graph -> one token per (time step, sensor), for GMAN."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from anyformer.errors import ShapeError
from anyformer.nn.encoders.base import Encoder, expect
from anyformer.nn.ranges import Count, PositiveFloat
from anyformer.registry import register

DAYS_PER_WEEK = 7


@register("encoder", "sensor-readings")
class SensorReadingsEncoder(Encoder):
    """GMAN's input layer (Zheng et al. 2020): the P = max_len past readings of N sensors
    -> a 2-layer FC of each reading -> tokens [B, P * N, D], time-major (step t, sensor n at
    t * N + n). Input: a dict {"readings": [B, P, N] float (scaled), "time": [B, P + horizon, 2]
    long (slot of the day in 0..steps_per_day-1, day of the week in 0..6) of the past and
    future steps, "spatial": [B, N, spatial_size] float (the sensor graph's Laplacian
    eigenvectors)}. GMAN's embedding reads `calendar` and `spatial`; `postprocess` maps
    outputs back to the data's units (x * std + mean)."""

    paper = "GMAN: A Graph Multi-Attention Network for Traffic Prediction (Zheng et al. 2020)"
    modality = "spatiotemporal"
    example_options = {"sensors": 3, "horizon": 2, "spatial_size": 2, "steps_per_day": 4}

    def __init__(self, dim: int, max_len: Count = 12, sensors: Count = 1, horizon: Count = 12,
                 spatial_size: Count = 8, steps_per_day: Count = 288, mean: float = 0.0, std: PositiveFloat = 1.0) -> None:
        super().__init__()
        self.steps_in, self.sensors, self.horizon = max_len, sensors, horizon
        self.num_tokens = max_len * sensors
        self.spatial_size, self.steps_per_day = spatial_size, steps_per_day
        self.mean, self.std = float(mean), float(std)
        self.reading_fc = nn.Sequential(nn.Linear(1, dim), nn.ReLU(), nn.Linear(dim, dim))

    def _readings(self, x: Any) -> torch.Tensor:
        if not isinstance(x, dict) or not {"readings", "time", "spatial"} <= set(x):
            raise ShapeError("encoder 'sensor-readings' expects a dict {'readings': [B, P, N], 'time': [B, P + Q, 2], "
                             f"'spatial': [B, N, K]}}; got {type(x).__name__}")
        readings = x["readings"]
        expect(readings, 3, "encoder 'sensor-readings' readings [batch, steps, sensors]", floating=True)
        if tuple(readings.shape[1:]) != (self.steps_in, self.sensors):
            raise ShapeError(f"encoder 'sensor-readings' expects readings [B, {self.steps_in}, {self.sensors}] "
                             f"(max_len steps, sensors), got {list(readings.shape)}")
        return readings

    def calendar(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(slot of the day, day of the week), each [B, P + horizon] long, checked in range."""
        time = x["time"]
        expect(time, 3, "encoder 'sensor-readings' time [batch, steps, 2]", floating=False)
        want = (self.steps_in + self.horizon, 2)
        if tuple(time.shape[1:]) != want:
            raise ShapeError(f"encoder 'sensor-readings' expects time [B, {want[0]}, 2] (past and future steps), got {list(time.shape)}")
        slot, day = time[..., 0], time[..., 1]
        if not torch.compiler.is_compiling() and bool(((slot < 0) | (slot >= self.steps_per_day) | (day < 0) | (day >= DAYS_PER_WEEK)).any()):
            raise ShapeError(f"encoder 'sensor-readings': time slots must lie in 0..{self.steps_per_day - 1} and days in 0..6")
        return slot, day

    def spatial(self, x: Any) -> torch.Tensor:
        """The sensors' spatial features [B, N, spatial_size]."""
        spatial = x["spatial"]
        expect(spatial, 3, "encoder 'sensor-readings' spatial [batch, sensors, features]", floating=True)
        if tuple(spatial.shape[1:]) != (self.sensors, self.spatial_size):
            raise ShapeError(f"encoder 'sensor-readings' expects spatial [B, {self.sensors}, {self.spatial_size}], got {list(spatial.shape)}")
        return spatial

    def forward(self, x: Any, mask: torch.Tensor | None = None):
        readings = self._readings(x)
        # A dict input is not cast with the model (.double()): follow the weights' dtype.
        tokens = self.reading_fc(readings[..., None].to(self.reading_fc[0].weight.dtype))
        return tokens.flatten(1, 2), None

    def head_hints(self) -> dict[str, Any]:
        # A plain stack's flatten forecast head then gives one value per sensor and step.
        return {"channels": self.sensors}

    def postprocess(self, out: torch.Tensor) -> torch.Tensor:
        return out * self.std + self.mean

    def example_input(self, batch: int = 2) -> Any:
        steps = self.steps_in + self.horizon
        slot = torch.randint(0, self.steps_per_day, (batch, steps))
        day = torch.randint(0, DAYS_PER_WEEK, (batch, steps))
        return {"readings": torch.randn(batch, self.steps_in, self.sensors), "time": torch.stack([slot, day], -1),
                "spatial": torch.randn(batch, self.sensors, self.spatial_size)}
