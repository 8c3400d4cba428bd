"""Pareto fronts: which rows no other row beats on both quality and cost."""
from __future__ import annotations

from collections.abc import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (quality, cost) points, higher quality and lower cost better: True where no
    other point is at least as good on both and strictly better on one."""
    flags = []
    for i, (q, c) in enumerate(points):
        dominated = any(
            (q2 >= q and c2 <= c) and (q2 > q or c2 < c)
            for j, (q2, c2) in enumerate(points) if j != i
        )
        flags.append(not dominated)
    return flags
