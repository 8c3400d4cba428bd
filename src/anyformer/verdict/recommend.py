"""Constraints on a recommended model, and the recommendation: among the models meeting
them, the cheapest of those tied with the best."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from anyformer.errors import unknown
from anyformer.verdict.noise import ALPHA, Noise, finite
from anyformer.verdict.ranking import goodness, ties

OPTIMIZE = ("quality", "latency", "params")


@dataclass
class Constraints:
    """Limits a recommended model must meet; None: no limit."""

    max_latency_ms: float | None = None
    max_params: int | None = None
    max_memory_mb: float | None = None

    def _checks(self) -> list[tuple[str, float, str, Any]]:
        """(label, limit, unit format, value of a row) per limit set."""
        found = []
        if self.max_latency_ms is not None:
            found.append(("latency", self.max_latency_ms, "{:.3g} ms", lambda r: r.get("latency_ms")))
        if self.max_params is not None:
            found.append(("params", self.max_params, "{:,.0f}", lambda r: r.get("params")))
        if self.max_memory_mb is not None:
            found.append(("peak memory", self.max_memory_mb, "{:.3g} MiB",
                          lambda r: None if r.get("peak_memory_bytes") is None else r["peak_memory_bytes"] / 2**20))
        return found

    def describe(self) -> str:
        return " and ".join(f"{label} <= {fmt.format(limit)}" for label, limit, fmt, _ in self._checks())

    def values_of(self, row: dict[str, Any]) -> str:
        return ", ".join(f"{fmt.format(get(row))} {label}".replace(" ms latency", " ms").replace(" MiB peak memory", " MiB")
                         for label, _, fmt, get in self._checks() if get(row) is not None)

    def met(self, row: dict[str, Any]) -> bool:
        # An unmeasured quantity cannot be shown to meet its limit.
        return all(get(row) is not None and get(row) <= limit for _, limit, _, get in self._checks())

    def closest(self, rows: list[dict[str, Any]]) -> str:
        parts = []
        for label, _, fmt, get in self._checks():
            known = [r for r in rows if get(r) is not None]
            if known:
                r = min(known, key=get)
                parts.append(f"the lowest {label} is {fmt.format(get(r))} ({r['model']})")
        return " and ".join(parts)


def recommend(rows: list[dict[str, Any]], noise: Noise, constraints: Constraints, optimize: str = "quality",
              alpha: float = ALPHA) -> tuple[dict[str, str] | None, str]:
    """Marks `feasible` and `recommended`; returns ({'model', 'reason'} or None, reason).
    Among the models meeting the constraints, those tied with the best of them; of these
    the one with the lowest latency (optimize quality or latency) or parameter count
    (optimize params)."""
    if optimize not in OPTIMIZE:
        raise unknown("--optimize", optimize, OPTIMIZE)
    for r in rows:
        r["feasible"] = bool(not r.get("baseline") and finite(r["quality"]) and constraints.met(r))
        r["recommended"] = False
    models = [r for r in rows if not r.get("baseline")]
    feasible = [r for r in models if r["feasible"]]
    where = constraints.describe()
    if not feasible:
        if not any(finite(r["quality"]) for r in models):
            return None, "no model has a test score to recommend it by"
        return None, f"no model meets {where}: {constraints.closest(models)}"
    best, tied, _ = ties(feasible, noise, alpha)
    key, word = ("params", "smallest") if optimize == "params" else ("latency_ms", "fastest")
    cost = lambda r: r[key] if finite(r.get(key)) else math.inf  # noqa: E731
    choice = min((r for r in feasible if r["model"] in tied), key=lambda r: (cost(r), -goodness(r)))
    choice["recommended"] = True
    reason = _sentence(choice, best, len(tied), len(feasible), constraints, word, cost(choice), key)
    return {"model": choice["model"], "reason": reason}, reason


def _sentence(choice: dict[str, Any], best: dict[str, Any], tied: int, feasible: int, constraints: Constraints,
              word: str, cost: float, key: str) -> str:
    """One sentence: what was chosen, among which models, under which limits, with its numbers."""
    name, metric, q = choice["model"], f"test {choice['metric']}", choice["quality"]
    where, own = constraints.describe(), constraints.values_of(choice)
    limits = f"meeting {where} (it has {own})" if where else ""
    amount = f"{cost:,.0f} params" if key == "params" else f"{cost:.3g} ms"
    if feasible == 1:
        head = f"{name} is the only model {limits or 'compared'}, with {metric} {q:.4f}"
    else:
        scope = f"among the {feasible} models {limits}" if where else "among all models (no constraints set)"
        if tied == 1:
            head = f"{name} has the best {metric} ({q:.4f}) {scope}, and no other is tied with it"
        elif choice is best:
            head = f"{name} has the best {metric} ({q:.4f}) and is the {word} ({amount}) of the {tied} models tied with it, {scope}"
        else:
            head = (f"{name} is the {word} ({amount}) of the {tied} models tied with the best, {best['model']} "
                    f"({metric} {best['quality']:.4f} vs {q:.4f}), {scope}")
    warn = f"; flagged: {', '.join(choice['flags'])}" if choice.get("flags") else ""
    return head + warn + "."
