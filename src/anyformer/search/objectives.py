"""What a search optimises: the candidate's quality on the validation split (the test split
stays out of every decision and is reported beside it) and its costs, and the hypervolume
by which two sets of trials are compared."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from optuna._hypervolume import compute_hypervolume  # Optuna's WFG; its public face is a plot only

from anyformer.errors import ConfigError, suggest


@dataclass(frozen=True)
class Objective:
    """One objective: the measurement it reads and its unit; costs are minimised on a log
    scale in the hypervolume (they span orders of magnitude), quality on its own."""

    name: str
    key: str
    unit: str
    cost: bool
    description: str


OBJECTIVES = {o.name: o for o in [
    Objective("quality", "quality", "", False, "the task's metric on the validation split"),
    Objective("latency", "latency_ms", "ms", True, "median forward latency of one evaluation batch"),
    Objective("params", "params", "", True, "parameters the forward pass uses"),
    Objective("memory", "memory_mb", "MiB", True, "peak memory of one forward pass"),
    Objective("size", "size_mb", "MiB", True, "the weights' bytes in memory (quantized ones at their width)"),
]}
# The reference point of the hypervolume, in the normalised space where every objective's
# best is 0 and its worst 1: slightly beyond the worst, so the worst points still count.
REFERENCE = 1.1


def parse_objectives(text: str | Sequence[str]) -> list[str]:
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if str(n).strip()]
    if not names:
        raise ConfigError(f"--objectives: name at least one of {', '.join(OBJECTIVES)}, e.g. quality,latency")
    for name in names:
        if name not in OBJECTIVES:
            raise ConfigError(f"--objectives: unknown objective {name!r}{suggest(name, OBJECTIVES)}; valid: "
                              f"{', '.join(OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--objectives names an objective twice: {','.join(names)}")
    return names


def directions(names: Sequence[str], higher_is_better: bool) -> list[str]:
    """Optuna's direction of each objective."""
    return ["maximize" if n == "quality" and higher_is_better else "minimize" for n in names]


def losses(values: np.ndarray, names: Sequence[str], dirs: Sequence[str]) -> np.ndarray:
    """Trials x objectives -> the same as quantities to minimise: quality negated when higher
    is better, costs as log10."""
    out = np.array(values, dtype=float).reshape(len(values), len(names))
    for j, (name, d) in enumerate(zip(names, dirs)):
        if OBJECTIVES[name].cost:
            out[:, j] = np.log10(np.maximum(out[:, j], 1e-12))
        if d == "maximize":
            out[:, j] = -out[:, j]
    return out


def bounds(loss_sets: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-objective best and worst over every set: one normalisation for sets compared."""
    pooled = np.concatenate([s for s in loss_sets if len(s)])
    return pooled.min(axis=0), pooled.max(axis=0)


def hypervolume(loss: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """The hypervolume the points dominate up to the reference point, after mapping each
    objective's [low, high] to [0, 1] (a constant objective maps to 0)."""
    if not len(loss):
        return 0.0
    span = np.where(high > low, high - low, 1.0)
    scaled = np.clip((loss - low) / span, 0.0, None)
    inside = scaled[(scaled < REFERENCE).all(axis=1)]
    if not len(inside):
        return 0.0
    return float(compute_hypervolume(inside, np.full(loss.shape[1], REFERENCE), assume_pareto=False))


def history(loss: np.ndarray, low: np.ndarray, high: np.ndarray) -> list[float]:
    """The hypervolume after each trial, in trial order."""
    return [hypervolume(loss[: k + 1], low, high) for k in range(len(loss))]


def finite(values: Sequence[float]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
