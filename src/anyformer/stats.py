"""Statistics for comparing trained models: confidence intervals of a mean quality (Wilson
score, Student t over seeds, a two-level bootstrap over seeds and test examples), tests of
a difference between two models (paired bootstrap, Welch's t) and Holm's step-down
correction for testing several models against one. Pure numpy / scipy, nothing of
anyformer, so any layer may use it.

Outcomes are a matrix [K seeds, N test units] of per-unit scores whose mean is the metric
(a hit 1/0 for accuracy, a squared error for MSE). Every model of a comparison is scored
on the same test units, so two models are paired through their units; their seeds are
independent trainings and are resampled independently.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as st

RESAMPLES = 2000
# The bootstrap draws [chunk, N] example indices at a time: bounded memory for large N
# (LM test sets count tokens).
_CHUNK_ELEMENTS = 4_000_000
NAN_PAIR = (math.nan, math.nan)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (Wilson 1927): unlike the normal
    approximation it stays inside [0, 1] and keeps its coverage near 0 and 1."""
    if n <= 0:
        return NAN_PAIR
    ci = st.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of independent values (one per seed); NaN for
    fewer than two values."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return NAN_PAIR
    half = float(st.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return float(x.mean()) - half, float(x.mean()) + half


def bootstrap_means(outcomes: Sequence[np.ndarray], resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """[len(outcomes), resamples] bootstrap replicates of each matrix's grand mean. One
    replicate draws N test units with replacement, shared by every matrix (the pairing),
    and for each matrix its own K seeds with replacement (a two-level bootstrap: both the
    training noise across seeds and the sampling noise of the test set count)."""
    mats = [np.atleast_2d(np.asarray(m, dtype=np.float64)) for m in outcomes]
    n = mats[0].shape[1]
    if any(m.shape[1] != n for m in mats):
        raise ValueError(f"outcome matrices cover different test sets: {[m.shape for m in mats]}")
    rng = np.random.default_rng(seed)
    out = np.empty((len(mats), resamples))
    chunk = max(1, min(resamples, _CHUNK_ELEMENTS // max(n, 1)))
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        units = rng.integers(0, n, size=(b, n))
        for j, m in enumerate(mats):
            k = m.shape[0]
            if k == 1:
                out[j, start:start + b] = m[0][units].mean(1)
                continue
            weights = rng.multinomial(k, np.full(k, 1.0 / k), size=b) / k  # seeds drawn, as weights
            per_unit = weights @ m  # [b, N]: each replicate's seed-averaged outcome per unit
            out[j, start:start + b] = np.take_along_axis(per_unit, units, axis=1).mean(1)
    return out


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central `confidence` share of bootstrap replicates (the percentile interval)."""
    lo, hi = np.quantile(replicates, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(lo), float(hi)


def replicate_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of 'the two means are equal' from paired replicates of each (one
    `bootstrap_means` call): twice the smaller share of replicate differences on either
    side of 0 (the inverted percentile interval), with the +1 correction so it is never 0.
    Identical outcomes give 1."""
    diff = np.asarray(b) - np.asarray(a)
    below = (np.sum(diff <= 0) + 1) / (len(diff) + 1)
    above = (np.sum(diff >= 0) + 1) / (len(diff) + 1)
    return float(min(1.0, 2 * min(below, above)))


def bootstrap_interval(outcomes: np.ndarray, confidence: float = 0.95, resamples: int = RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the grand mean of `outcomes` [K, N] (see `bootstrap_means`)."""
    return percentile_interval(bootstrap_means([outcomes], resamples, seed)[0], confidence)


def paired_bootstrap_pvalue(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value of 'mean(b) == mean(a)' for outcomes [K_a, N] and [K_b, N] on the
    same test units (see `replicate_pvalue`)."""
    means = bootstrap_means([a, b], resamples, seed)
    return replicate_pvalue(means[0], means[1])


def welch_pvalue(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test of equal means over seeds (unequal variances). Both sets
    without spread: 1 when the means are equal, else 0 (the difference is exact)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.std() == 0 and y.std() == 0:
        return 1.0 if x.mean() == y.mean() else 0.0
    return float(st.ttest_ind(x, y, equal_var=False).pvalue)


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down correction (Holm 1979): which hypotheses are rejected with the
    family-wise error rate held at `alpha`. The i-th smallest p is tested at
    alpha / (m - i); the first that fails stops the rejections."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected = [False] * len(pvalues)
    m = len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def pareto_front(points: Sequence[tuple[float, float]],
                 beats: Callable[[int, int], bool | None] | None = None) -> list[bool]:
    """For (quality, cost) points, higher quality and lower cost better: True where no other
    point is at most as costly and beats it. `beats(j, i)`: whether point j is better than
    point i, None for the plain rule (higher quality, or the same quality and strictly
    cheaper). A comparison passes a test of the difference, so that a model is off the
    front only when a cheaper one is better beyond the noise."""
    def better(j: int, i: int) -> bool:
        verdict = beats(j, i) if beats is not None else None
        if verdict is not None:
            return verdict
        return points[j][0] > points[i][0] or (points[j][0] == points[i][0] and points[j][1] < points[i][1])

    return [not any(j != i and points[j][1] <= c and better(j, i) for j in range(len(points)))
            for i, (_, c) in enumerate(points)]
