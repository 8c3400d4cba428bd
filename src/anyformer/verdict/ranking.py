"""Ranking a comparison's rows: by mean quality, with the models statistically tied with
the best (Holm-corrected), and Pareto fronts that drop a model only when a cheaper one
beats it beyond the noise."""
from __future__ import annotations

import math
from typing import Any

from anyformer.stats import holm, pareto_front
from anyformer.verdict.noise import ALPHA, Noise, finite


def goodness(row: dict[str, Any]) -> float:
    """The row's quality signed so that larger is better; -inf for no score."""
    q = row["quality"]
    return (q if row["higher_is_better"] else -q) if finite(q) else -math.inf


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The models by mean quality, best first and rows without a score last; then the
    trivial baselines, ranked the same way. The first row is always the best model (what
    readers of results.json took it for before baselines joined); where a model stands
    against the baselines is its delta and its flags."""
    return sorted(rows, key=lambda r: (bool(r.get("baseline")), -goodness(r)))


def ties(rows: list[dict[str, Any]], noise: Noise, alpha: float = ALPHA) -> tuple[dict | None, set[str], str]:
    """(best row, names tied with it (itself included), the test as words): each other
    scored row is tested against the best; Holm's correction over those tests."""
    scored = [r for r in rows if finite(r["quality"])]
    if not scored:
        return None, set(), "none (no model has a score)"
    best = max(scored, key=goodness)
    others = [r for r in scored if r is not best]
    tests = [noise.pvalue(best["model"], r["model"]) for r in others]
    testable = [(r, p) for r, (p, _) in zip(others, tests) if p is not None]
    rejected = holm([p for _, p in testable], alpha)
    tied = {best["model"]} | {r["model"] for (r, _), rej in zip(testable, rejected) if not rej}
    tied |= {r["model"] for r, (p, _) in zip(others, tests) if p is None and r["quality"] == best["quality"]}
    if not others:
        return best, tied, "none (one model)"
    names = "; ".join(sorted({name for _, name in tests}))
    n = len(testable)
    return best, tied, f"{names}; Holm-corrected over {n} comparison{'s' * (n != 1)} with the best, alpha {alpha}"


def mark_pareto(rows: list[dict[str, Any]], noise: Noise | None = None, alpha: float = ALPHA) -> None:
    """`pareto_latency` / `pareto_params`: a model is off a front only when another is at
    most as costly and better beyond the noise (significantly, by `noise`'s test). Without
    a noise estimate, the plain front: better and no costlier, or as good and cheaper. A
    row without a score is on no front: however cheap, it has measured no quality."""
    models = [r for r in rows if not r.get("baseline") and finite(r["quality"])]
    for key, flag in (("latency_ms", "pareto_latency"), ("params", "pareto_params")):
        points = [(goodness(r), r.get(key) if finite(r.get(key)) else math.inf) for r in models]

        def beats(j: int, i: int) -> bool | None:  # None: no test for the pair, the plain rule
            p = None if noise is None else noise.pvalue(models[j]["model"], models[i]["model"])[0]
            return None if p is None else points[j][0] > points[i][0] and p < alpha

        on = {id(r) for r, front in zip(models, pareto_front(points, beats)) if front}
        for r in rows:
            r[flag] = id(r) in on
