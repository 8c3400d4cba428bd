"""Deterministic split helpers shared by the tasks."""
from __future__ import annotations

import numpy as np
import torch

from anyformer.errors import DataError


def stratified_split(labels: torch.Tensor, fractions: list[float], seed: int = 0) -> list[torch.Tensor]:
    """Indices of each part, every class divided in the given fractions (seeded shuffle)."""
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    gen = torch.Generator().manual_seed(seed)
    # Each class's indices in ascending order, all classes by one stable sort in numpy (a
    # mask per class was k passes over the labels; torch's sort took 20x numpy's here).
    values = labels.numpy()
    by_class = np.argsort(values, kind="stable")
    counts = np.unique(values, return_counts=True)[1]
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for idx in np.split(by_class, np.cumsum(counts)[:-1]):
        idx = idx[torch.randperm(len(idx), generator=gen).numpy()]
        bounds = torch.tensor([0.0] + fractions).cumsum(0) * len(idx)
        cuts = bounds.round().long().tolist()
        for p in range(len(fractions)):
            parts[p].append(idx[cuts[p]: cuts[p + 1]])
    return [torch.from_numpy(np.sort(np.concatenate(p))) if p else torch.zeros(0, dtype=torch.long) for p in parts]


def random_split(n: int, fractions: list[float], seed: int = 0) -> list[torch.Tensor]:
    """Indices of each part of a seeded random permutation of range(n)."""
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cuts = (torch.tensor([0.0] + fractions).cumsum(0) * n).round().long().tolist()
    return [perm[cuts[i]: cuts[i + 1]].sort().values for i in range(len(fractions))]
