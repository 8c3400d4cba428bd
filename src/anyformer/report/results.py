"""The results of a comparison as the report reads them: one normalised dict whatever wrote
it. results.json grew optional fields (seeds, intervals, ties, a baseline row, constraints,
a recommendation); files written before them hold only the old ones, and every reader here
treats a missing field as "not measured" rather than failing."""
from __future__ import annotations

import math
from typing import Any

# One colour per model, the same in every figure (matplotlib's tab20, which plotly takes as
# hex strings too): pairs of a strong and a light shade, strong ones first so that the first
# ten models never get a pale colour.
_TAB20 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
          "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"]

Curves = dict[str, list[list[dict[str, Any]]]]


def num(value: Any) -> float | None:
    """A finite number, or None for a missing, null (JSON's NaN), NaN or non-numeric value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def describe_test_set(results: dict[str, Any]) -> str:
    """The test set's size as its intervals count it: '359 examples', or '64 (3,968 tokens
    scored)' where the scored units are not the examples (a language model's tokens)."""
    n, unit, units = results.get("n_test"), results.get("test_unit") or "example", results.get("n_test_units")
    if n is None:
        return "-"
    if units is None or units == n:
        return f"{n:,} {unit}{'s' if n != 1 else ''}"
    return f"{n:,} ({units:,} {unit}{'s' if units != 1 else ''} scored)"


def normalize(results: dict[str, Any]) -> dict[str, Any]:
    """A copy of `results` with every key the report reads present: metric and direction
    taken from the rows when the file predates them, `recommended` set on the row the
    recommendation names, and baseline rows kept apart from the models."""
    rows = [dict(r) for r in results.get("rows") or []]
    first = next((r for r in rows if not r.get("baseline")), rows[0] if rows else {})
    out = dict(results)
    out["rows"] = rows
    out["task"] = results.get("task") or "comparison"
    out["metric"] = results.get("metric") or first.get("metric") or "quality"
    higher = results.get("higher_is_better", first.get("higher_is_better"))
    out["higher_is_better"] = True if higher is None else bool(higher)
    out["constraints"] = results.get("constraints") or {}
    rec = results.get("recommendation")
    out["recommendation"] = dict(rec) if isinstance(rec, dict) and rec.get("model") else None
    if out["recommendation"] and not out["recommendation"].get("reason"):
        out["recommendation"]["reason"] = results.get("recommendation_reason")
    for r in rows:
        r["quality"] = num(r.get("quality"))
        if "recommended" not in r:
            r["recommended"] = bool(out["recommendation"]) and r.get("model") == out["recommendation"]["model"]
    return out


def models(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of trained models (the trivial baseline has no cost and is drawn apart)."""
    return [r for r in results["rows"] if not r.get("baseline")]


def baselines(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in results["rows"] if r.get("baseline") and r.get("quality") is not None]


def colours(names: list[str]) -> dict[str, str]:
    return {name: _TAB20[i % len(_TAB20)] for i, name in enumerate(names)}


def interval(row: dict[str, Any], key: str = "quality") -> tuple[float, float] | None:
    """(low, high) of the row's interval for `key` (quality or latency_ms), or None when
    the comparison reported none (one seed, or an older file)."""
    lo, hi = num(row.get(f"{key}_low")), num(row.get(f"{key}_high"))
    return (lo, hi) if lo is not None and hi is not None else None


def seed_count(row: dict[str, Any]) -> int:
    seeds = row.get("seeds")
    return len(seeds) if isinstance(seeds, list) and seeds else 1


def flags(row: dict[str, Any]) -> list[str]:
    """The row's markers, most important first: what the comparison concluded about it
    (recommended, tied, baseline, constraints, fronts), then its own warning flags."""
    marks = []
    if row.get("recommended"):
        marks.append("recommended")
    if row.get("tied_with_best"):
        marks.append("tied with best")
    if row.get("baseline"):
        marks.append("baseline")
    if row.get("feasible") is False and not row.get("baseline"):  # a baseline is never a candidate
        marks.append("violates constraints")
    if row.get("pareto_latency"):
        marks.append("front: latency")
    if row.get("pareto_params"):
        marks.append("front: params")
    return marks + [str(f) for f in row.get("flags") or []]


def limits(constraints: dict[str, Any], metric: str) -> dict[str, tuple[float | None, float | None]]:
    """The constraints as (low, high) bounds per plotted quantity: "latency_ms", "params",
    "quality". Names are read loosely (max_latency_ms, latency_ms_max, max_params,
    min_quality, min_accuracy, ...) because the figure only shades what it recognises; an
    unrecognised constraint is still listed in the plan."""
    bounds: dict[str, list[float | None]] = {}
    for name, value in constraints.items():
        v = num(value)
        key = name.lower()
        if v is None:
            continue
        side = 1 if "max" in key else (0 if "min" in key else None)
        if side is None:
            continue
        target = ("latency_ms" if "latency" in key else "params" if "param" in key
                  else "quality" if ("quality" in key or metric.lower() in key) else None)
        if target is not None:
            bounds.setdefault(target, [None, None])[side] = v
    return {k: (lo, hi) for k, (lo, hi) in bounds.items()}


def per_seed(curves: dict[str, Any] | None) -> Curves:
    """Curves as model -> one record list per seed. Today's callers pass one list of records
    per model (a single run); a list whose items are dicts is taken as that one seed."""
    out: Curves = {}
    for name, runs in (curves or {}).items():
        runs = list(runs or [])
        if runs and isinstance(runs[0], dict):
            runs = [runs]
        out[name] = [list(run) for run in runs if run]
    return out


def sort_rows(rows: list[dict[str, Any]], higher_is_better: bool) -> list[dict[str, Any]]:
    """Best quality first, rows without a score last."""
    sign = -1.0 if higher_is_better else 1.0
    return sorted(rows, key=lambda r: (r.get("quality") is None, sign * (r.get("quality") or 0.0)))
