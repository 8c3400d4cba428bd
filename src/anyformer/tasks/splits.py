"""Deterministic split helpers shared by the tasks."""
from __future__ import annotations

import torch

from anyformer.errors import DataError


def stratified_split(labels: torch.Tensor, fractions: list[float], seed: int = 0) -> list[torch.Tensor]:
    """Indices of each part, every class divided in the given fractions (seeded shuffle)."""
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in fractions]
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        bounds = torch.tensor([0.0] + fractions).cumsum(0) * len(idx)
        cuts = bounds.round().long().tolist()
        for p in range(len(fractions)):
            parts[p].append(idx[cuts[p]: cuts[p + 1]])
    return [torch.cat(p).sort().values if p else torch.zeros(0, dtype=torch.long) for p in parts]


def random_split(n: int, fractions: list[float], seed: int = 0) -> list[torch.Tensor]:
    """Indices of each part of a seeded random permutation of range(n)."""
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cuts = (torch.tensor([0.0] + fractions).cumsum(0) * n).round().long().tolist()
    return [perm[cuts[i]: cuts[i + 1]].sort().values for i in range(len(fractions))]
