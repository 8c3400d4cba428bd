"""Optimal-transport primitives of model fusion ("Transformer Fusion with Optimal Transport",
Imfeld et al. 2024, after OTFusion, Singh & Jaggi 2020): couplings between the channels of
two layers from their features, the head-structured coupling of attention, and moving a
tensor along one axis by a coupling. No model knowledge here (compress/fuse_align.py).

A coupling P [n_src, n_tgt] has uniform marginals: rows sum to 1/n_src, columns to 1/n_tgt.
Between layers of one width, n * P is doubly stochastic (emd: a permutation matrix).
POT is optional (`pip install anyformer[compress]`) and imported only here, on first use."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from anyformer.errors import ConfigError

SOLVERS = ("emd", "sinkhorn")
SIDES = ("out", "in")


def _ot() -> Any:
    try:
        import ot
    except ImportError:
        raise ConfigError("--method fuse needs POT (optimal transport): pip install anyformer[compress]") from None
    return ot


def ground_cost(source: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Euclidean distances [n_src, n_tgt] between feature rows source [n_src, k] and target
    [n_tgt, k] (the reference's ground metric: euclidean, not squared)."""
    return torch.cdist(source.double(), target.double()).numpy()


def coupling(cost: np.ndarray, solver: str = "emd", reg: float = 0.08) -> np.ndarray:
    """The optimal coupling [n_src, n_tgt] with uniform marginals for `cost`: exact (`emd`,
    a vertex: a permutation / n for equal sizes, snapped to exactly that) or entropic
    (`sinkhorn`, soft, regularisation `reg` on the cost scaled to max 1, as the reference
    normalises its ground metric by its max)."""
    n, m = cost.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    scale = float(cost.max()) if cost.size else 0.0
    cost = cost / scale if scale > 0 else cost
    ot = _ot()
    if solver == "emd":
        plan = ot.emd(a, b, np.ascontiguousarray(cost), numItermax=1_000_000)
        if n == m:  # a vertex of the square transport polytope is a permutation: remove float noise
            perm = (plan * n).round()
            if np.abs(perm - plan * n).max() < 1e-6 and (perm.sum(0) == 1).all() and (perm.sum(1) == 1).all():
                plan = perm / n
        return plan
    if solver == "sinkhorn":
        # The reference's plain Sinkhorn (fast matrix-vector steps); the log-domain one only
        # when a small `reg` underflows exp(-cost / reg).
        plan = ot.sinkhorn(a, b, cost, reg, numItermax=10_000, stopThr=1e-9, warn=False)
        if not np.isfinite(plan).all() or plan.sum() < 0.5:
            plan = ot.sinkhorn(a, b, cost, reg, method="sinkhorn_log", numItermax=10_000, stopThr=1e-9, warn=False)
        return plan
    raise ConfigError(f"unknown --solver {solver!r}; valid: {', '.join(SOLVERS)}")


def transport_cost(plan: np.ndarray, cost: np.ndarray) -> float:
    """<P, C>: what moving the source onto the target costs under `plan`."""
    return float((plan * cost).sum())


def head_coupling(source: list[torch.Tensor], target: list[torch.Tensor], heads: tuple[int, int],
                  solver: str, reg: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Attention's coupled spaces, head by head: `source` / `target` hold one feature matrix
    per space sharing the head structure (q-k: [H * Dh, k], v-o: [H * Dh, k']), heads as
    (H_src, H_tgt). Within every head pair (h, g) each space gets its own coupling Q[h, g]
    (Dh x Dh'); the heads are matched by P_H over the summed costs of those couplings, so a
    head moves whole (its q, k, v and o together). -> (P_H [H_src, H_tgt], per space the
    neuron coupling [H_src * Dh, H_tgt * Dh'], block (h, g) = P_H[h, g] * Q[h, g])."""
    hs, ht = heads
    head_cost = np.zeros((hs, ht))
    inner: list[list[list[np.ndarray]]] = []
    for src, tgt in zip(source, target):
        ds, dt = src.shape[0] // hs, tgt.shape[0] // ht
        costs = [[ground_cost(src[h * ds:(h + 1) * ds], tgt[g * dt:(g + 1) * dt]) for g in range(ht)] for h in range(hs)]
        top = max(float(c.max()) for row in costs for c in row)
        plans = []
        for h in range(hs):
            row = []
            for g in range(ht):
                c = costs[h][g] / top if top > 0 else costs[h][g]  # each space on one scale, so their sum is fair
                q = coupling(c, solver, reg)
                head_cost[h, g] += transport_cost(q, c)
                row.append(q)
            plans.append(row)
        inner.append(plans)
    p_heads = coupling(head_cost, solver, reg)
    full = []
    for plans in inner:
        rows = [np.concatenate([p_heads[h, g] * plans[h][g] for g in range(ht)], axis=1) for h in range(hs)]
        full.append(np.concatenate(rows, axis=0))
    return p_heads, full


def move(tensor: torch.Tensor, axis: int, plan: np.ndarray, side: str) -> torch.Tensor:
    """`tensor` with its `axis` (n_src channels) carried to the n_tgt target channels by
    `plan`. side 'out' (the tensor writes those channels: a row of a linear, a bias, a norm
    gain): each target is the plan-weighted mean of its sources, n_tgt * P. side 'in' (the
    tensor reads them: a column): each source is shared out in full, n_src * P, since a
    target channel then stands for the sources merged into it. Equal for a square plan.
    The weights are normalised by the plan's own sums (1/n_tgt, 1/n_src up to the solver's
    tolerance), so a permutation moves values exactly."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    sums = plan.sum(0, keepdims=True) if side == "out" else plan.sum(1, keepdims=True)
    weights = torch.from_numpy(plan / np.where(sums > 0, sums, 1.0))
    moved = torch.movedim(tensor.detach().double(), axis, -1) @ weights
    return torch.movedim(moved, -1, axis).to(tensor.dtype)


def top_indices(importance: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` largest entries' indices, in ascending order (ties: the lower index)."""
    order = sorted(range(importance.numel()), key=lambda i: (-float(importance[i]), i))
    return torch.tensor(sorted(order[:count]), dtype=torch.long)


def is_permutation(plan: np.ndarray) -> bool:
    """True when the plan is square with one nonzero entry in each row and column (n * plan
    is then a permutation matrix)."""
    n, m = plan.shape
    nonzero = plan != 0
    return n == m and bool((nonzero.sum(0) == 1).all() and (nonzero.sum(1) == 1).all())
