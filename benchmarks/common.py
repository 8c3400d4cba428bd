"""Shared helpers of the benchmark suites: interleaved timing and result files."""
from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def machine() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": __import__("os").cpu_count(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "python": platform.python_version(), "processor": platform.processor() or platform.machine()}


def interleaved(runners: dict[str, Callable[[], None]], rounds: int, warmup: int = 1,
                budget_s: float | None = None) -> dict[str, list[float]]:
    """Seconds per call of each runner, taken A B C A B C ... so that noise from other
    processes falls on every runner alike; `budget_s` ends the rounds early (>= 2 rounds)."""
    for _ in range(warmup):
        for fn in runners.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    start = time.perf_counter()
    for r in range(rounds):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        if budget_s is not None and r >= 1 and time.perf_counter() - start > budget_s:
            break
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of time(b) / time(a): > 1 means a is faster. Pairing each round's
    runs cancels slow periods that hit both."""
    return statistics.median(tb / ta for ta, tb in zip(a, b))
