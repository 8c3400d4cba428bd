"""The noise of a comparison: per-model evidence (seed scores, per-test-unit outcomes) and
from it each model's 95% interval and the test of two models' difference."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from anyformer.stats import (RESAMPLES, bootstrap_means, percentile_interval, replicate_pvalue, t_interval, welch_pvalue,
                             wilson_interval)

ALPHA = 0.05
CONFIDENCE = 0.95


@dataclass
class Evidence:
    """What a model's quality rests on: its seeds' scores and, when the metric is a mean over
    test units, the per-unit outcomes [K, N] of those seeds (rows in the same order)."""

    qualities: list[float]
    outcomes: np.ndarray | None = None

    def finite(self) -> "Evidence":
        """Without the seeds that scored NaN (a diverged run measures nothing)."""
        keep = [i for i, q in enumerate(self.qualities) if math.isfinite(q)]
        outcomes = None if self.outcomes is None or not keep else self.outcomes[keep]
        return Evidence([self.qualities[i] for i in keep], outcomes)


def finite(v: Any) -> bool:
    """A real number that is not NaN or infinite (None, NaN: not measured)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Noise:
    """Intervals and pairwise tests for the models of one comparison. Where every model has
    per-unit outcomes on the same test units, the bootstrap replicates of all of them are
    drawn together (one shared resampling of the units: paired); else Student t / Welch
    over seeds; with one seed and no outcomes there is no noise estimate at all. `bounds`:
    the values the metric can take; a Student t interval is cut to them (the others cannot
    leave them)."""

    def __init__(self, evidence: dict[str, Evidence], resamples: int = RESAMPLES,
                 bounds: tuple[float, float] = (-math.inf, math.inf)) -> None:
        self.bounds = bounds
        self.evidence = {name: e.finite() for name, e in evidence.items()}
        mats = {n: e.outcomes for n, e in self.evidence.items() if e.outcomes is not None}
        shared = len({m.shape[1] for m in mats.values()}) == 1
        self.replicates = dict(zip(mats, bootstrap_means(list(mats.values()), resamples))) if shared else {}
        self.resamples = resamples

    def interval(self, name: str) -> tuple[float, float, str]:
        """(low, high, method) of the model's mean quality."""
        e = self.evidence[name]
        if e.outcomes is not None and len(e.qualities) == 1 and np.isin(e.outcomes, (0.0, 1.0)).all():
            return (*wilson_interval(int(e.outcomes.sum()), e.outcomes.shape[1], CONFIDENCE), "Wilson score over test examples")
        if name in self.replicates:
            over = "seeds and test examples" if len(e.qualities) > 1 else "test examples"
            return (*percentile_interval(self.replicates[name], CONFIDENCE),
                    f"bootstrap over {over} (percentile, {self.resamples} resamples)")
        if len(e.qualities) > 1:
            low, high = t_interval(e.qualities, CONFIDENCE)
            return max(low, self.bounds[0]), min(high, self.bounds[1]), "Student t over seeds"
        return math.nan, math.nan, "none (one seed, no per-example outcomes)"

    def pvalue(self, a: str, b: str) -> tuple[float | None, str]:
        """(two-sided p-value of equal means, test name); None when nothing can be tested."""
        if a in self.replicates and b in self.replicates:
            seeds = max(len(self.evidence[a].qualities), len(self.evidence[b].qualities))
            over = "seeds and test examples" if seeds > 1 else "test examples"
            return replicate_pvalue(self.replicates[a], self.replicates[b]), f"paired bootstrap over {over}"
        qa, qb = self.evidence[a].qualities, self.evidence[b].qualities
        if len(qa) > 1 and len(qb) > 1:
            return welch_pvalue(qa, qb), "Welch t-test over seeds"
        return None, "none (one seed, no per-example outcomes: only equal means tie)"
