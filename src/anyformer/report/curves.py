"""Learning curves across seeds: per logged step, the mean and the min-max band of the seeds
that reached it. Seeds under a time budget stop at different steps, so the band is taken
over whichever seeds logged the step rather than cut at the shortest run."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anyformer.report.results import num


@dataclass
class Band:
    steps: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    seeds: list[int]  # how many seeds logged each step

    def __len__(self) -> int:
        return len(self.steps)


def series(records: list[dict[str, Any]], key: str, split: str | None) -> dict[int, float]:
    """step -> value of `key` in one run's metrics records: training records carry no
    "split"; evaluation records carry split="val" (or "test")."""
    out: dict[int, float] = {}
    for rec in records:
        if rec.get("split") != split or not isinstance(rec.get("step"), int):
            continue
        value = num(rec.get(key))
        if value is not None:
            out[rec["step"]] = value  # a resumed run may log a step twice: the later one stands
    return out


def band(runs: list[list[dict[str, Any]]], key: str, split: str | None = None) -> Band:
    """Mean and min-max of `key` across the seeds' runs, per step."""
    per_run = [series(run, key, split) for run in runs]
    steps = sorted({s for run in per_run for s in run})
    out = Band([], [], [], [], [])
    for step in steps:
        values = [run[step] for run in per_run if step in run]
        out.steps.append(step)
        out.mean.append(sum(values) / len(values))
        out.low.append(min(values))
        out.high.append(max(values))
        out.seeds.append(len(values))
    return out


def curve_bands(curves: dict[str, list[list[dict[str, Any]]]], metric: str) -> dict[str, tuple[Band, Band]]:
    """model -> (training-loss band, validation-metric band), models without either left out."""
    out = {}
    for name, runs in curves.items():
        loss, val = band(runs, "loss"), band(runs, metric, "val")
        if len(loss) or len(val):
            out[name] = (loss, val)
    return out
