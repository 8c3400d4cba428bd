"""The whole verdict on a comparison's rows: intervals, ties, fronts, flags, deltas and the
recommendation, in that order (flags read the intervals, the recommendation the flags)."""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from anyformer.verdict.noise import ALPHA, Evidence, Noise, finite
from anyformer.verdict.ranking import goodness, mark_pareto, sort_rows, ties
from anyformer.verdict.recommend import Constraints, recommend

LATENCY_SPREAD = 1.5  # q3 / q1 of the latency repeats above which the latency is flagged
UNDERTRAINED = 0.5  # a seed that ran fewer than this share of its planned steps is flagged


def mark_flags(rows: list[dict[str, Any]]) -> None:
    """Short warnings per model row: no better than the best trivial baseline (its interval
    reaches the baseline's score), a seed cut well short of its planned steps, latency
    repeats that disagree, seeds without a score."""
    baselines = [r for r in rows if r.get("baseline") and finite(r["quality"])]
    base = max(baselines, key=goodness) if baselines else None
    for r in rows:
        flags = r.setdefault("flags", [])
        if r.get("baseline"):
            continue
        sign = 1.0 if r["higher_is_better"] else -1.0
        worst = r.get("quality_low") if r["higher_is_better"] else r.get("quality_high")
        worst = worst if finite(worst) else r["quality"]
        if base is not None and finite(worst) and sign * (worst - base["quality"]) <= 0:
            flags.append(f"<= baseline {base['model']}")
        short = [s for s in r.get("seeds", []) if s.get("planned_steps") and s["steps"] < UNDERTRAINED * s["planned_steps"]]
        if short:
            s = min(short, key=lambda s: s["steps"])
            flags.append(f"undertrained {s['steps']}/{s['planned_steps']} steps")
        # The middle half of the repeats: one slow repeat (a hiccup of the machine) does not
        # move the median the table reports, so it is no disagreement; rows without
        # quartiles (older files) fall back to the full range.
        low, high = r.get("latency_ms_q1"), r.get("latency_ms_q3")
        if not (finite(low) and finite(high)):
            low, high = r.get("latency_ms_low"), r.get("latency_ms_high")
        if finite(low) and finite(high) and low > 0 and high / low > LATENCY_SPREAD:
            flags.append(f"noisy latency {high / low:.1f}x")
        nan = sum(1 for s in r.get("seeds", []) if not finite(s.get("quality")))
        if nan:
            flags.append(f"NaN in {nan}/{len(r['seeds'])} seeds")


def mark_delta(rows: list[dict[str, Any]], reference: str) -> None:
    """`delta`: each row's mean quality minus the reference (first listed) model's."""
    ref = next((r["quality"] for r in rows if r["model"] == reference), math.nan)
    for r in rows:
        r["delta"] = r["quality"] - ref if finite(r["quality"]) and finite(ref) else math.nan


def judge(rows: list[dict[str, Any]], evidence: dict[str, Evidence], *, reference: str,
          constraints: Constraints | None = None, optimize: str = "quality", alpha: float = ALPHA,
          bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every verdict field on every row; returns the ranked rows and results.json's
    top-level verdict fields (interval_method, tie_test, constraints, optimize,
    recommendation, recommendation_reason). `bounds`: the values the metric can take
    (the task problem's `metric_range`); no interval reaches beyond them."""
    constraints = constraints or Constraints()
    noise = Noise(evidence, bounds=bounds)
    methods: dict[str, list[str]] = {}
    for r in rows:
        r["quality_low"], r["quality_high"], method = noise.interval(r["model"])
        methods.setdefault(method, []).append("baselines" if r.get("baseline") else "models")
    interval_method = "; ".join(m if set(who) == {"models"} or len(methods) == 1 else f"{m} ({', '.join(sorted(set(who)))})"
                                for m, who in methods.items())
    _, tied, tie_test = ties([r for r in rows if not r.get("baseline")], noise, alpha)
    for r in rows:
        r["tied_with_best"] = r["model"] in tied and not r.get("baseline")
    mark_pareto(rows, noise, alpha)
    mark_flags(rows)
    mark_delta(rows, reference)
    recommendation, reason = recommend(rows, noise, constraints, optimize, alpha)
    fields = {"interval_method": interval_method, "tie_test": tie_test, "constraints": asdict(constraints),
              "optimize": optimize, "recommendation": recommendation, "recommendation_reason": reason}
    return sort_rows(rows), fields
