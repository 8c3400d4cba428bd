"""Time budgets: durations as the commands take them (`90`, `90s`, `10m`, `1.5h`), the split
of a job's total budget over its runs, and a job's progress with an estimate of the time
left. Bottom layer: imports only the standard library and `anyformer.errors`.

    parse_duration("10m")             # 600.0
    split_budget(600, runs=6)         # 100.0 s per run
    clock = JobClock(runs=6, planned_s=600)
    clock.finish(100, actual_s=120)   # "job 17% done, about 10 min left"
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from anyformer.errors import ConfigError

UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
# `compare` with no budget and no --steps trains the task's default steps, unless the
# estimate of the whole job exceeds this: then this is the job's total budget.
DEFAULT_TOTAL_S = 600.0


def parse_duration(text: str | float | None, option: str = "--budget") -> float | None:
    """Seconds in `text`: a plain number is seconds; or a number with s, m (min) or h."""
    if text is None:
        return None
    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", str(text).lower())
    if not found or found.group(2) not in UNITS or float(found.group(1)) <= 0:
        raise ConfigError(f"{option} {text}: not a duration; give seconds or a number with s, m or h, e.g. 90, 90s, 10m, 1.5h")
    return float(found.group(1)) * UNITS[found.group(2)]


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '2.5 h': rounded as an estimate is."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def split_budget(total_s: float, runs: int, spent_s: float = 0.0) -> float:
    """Each run's equal share of a total budget, after `spent_s` already spent (measuring
    the models' costs); never below zero (then every run trains its minimum)."""
    if runs < 1:
        raise ConfigError(f"a budget is split over at least one run, got {runs}")
    return max(total_s - spent_s, 0.0) / runs


def run_budget(runs: int, estimate_s: float, spent_s: float, budget_s: float | None = None,
               total_s: float | None = None, steps: int | None = None) -> tuple[float | None, float | None]:
    """(each run's training budget, None to train the planned steps; the total budget it is
    an equal share of, or None): `budget_s` per run as given; `total_s` split over the runs
    after `spent_s`; with neither and no steps, the task's default steps unless their
    estimated time for the whole job exceeds DEFAULT_TOTAL_S, which is then split so."""
    if budget_s is not None and total_s is not None:
        raise ConfigError("give --budget (per model and seed) or --total-budget (for the whole job), not both")
    if total_s is not None:
        return split_budget(total_s, runs, spent_s), total_s
    if budget_s is not None or steps is not None or estimate_s <= DEFAULT_TOTAL_S:
        return budget_s, None
    return split_budget(DEFAULT_TOTAL_S, runs, spent_s), DEFAULT_TOTAL_S


def budget_note(share_s: float | None, total_s: float | None, given: bool) -> str:
    """How a total budget was split, for the plan line ('' when none was)."""
    if share_s is None or total_s is None:
        return ""
    if given:
        return (f"total budget {format_duration(total_s)} split equally over the model-seeds after the cost "
                f"measurements: {share_s:.1f} s each")
    return (f"no budget given: {format_duration(total_s)} in all, {share_s:.0f} s per model-seed; "
            "set --budget/--total-budget/--steps to change")


@dataclass
class JobClock:
    """A job's progress over its runs: the share done (by planned training time) and the
    time left, the plan scaled by the pace of the runs trained so far."""

    runs: int
    planned_s: float  # the planned training time of every run, finished earlier or not
    done: int = 0
    done_planned_s: float = 0.0
    trained_planned_s: float = 0.0
    trained_actual_s: float = 0.0

    def finish(self, planned_s: float, actual_s: float | None = None) -> str:
        """Count one run done (`actual_s` None: read back, not trained now); the job's state."""
        self.done += 1
        self.done_planned_s += planned_s
        if actual_s is not None:
            self.trained_planned_s += planned_s
            self.trained_actual_s += actual_s
        if self.done >= self.runs:
            return "job done"
        pace = self.trained_actual_s / self.trained_planned_s if self.trained_planned_s > 0 else 1.0
        share = self.done_planned_s / self.planned_s if self.planned_s > 0 else self.done / self.runs
        left = max(self.planned_s - self.done_planned_s, 0.0) * pace
        return f"job {share:.0%} done, about {format_duration(left)} left"
