"""The transport maps of OT fusion ("Transformer Fusion with Optimal Transport", Imfeld et
al. 2024): for each channel space of a layout (compress/fuse_layout.py), a coupling from the
other model's channels onto the target's, from features of each channel.

Features ([channels, k] per space): `activations`, each channel's values over the real
tokens of the calibration batches (the residual stream at the stack's input and after every
layer, q and k outputs together for the q-k space, v's outputs, an ffn unit's output), or
`weights`, each channel's slice of the tensors that index it, with their residual axis first
carried by the residual map and axes in other unaligned spaces left out. The cost between
two channels is the Euclidean distance of their features standardised as the reference does
(activations: z-scores per channel; weights: unit norm per channel).

The target is the anchor (model A) itself, or, for a narrower fused model, the anchor's
most important channels of each space (largest feature norm; for attention whole heads),
onto which the anchor is transported as well. The residual map is one coupling for the
whole residual path, computed first; each block's maps follow from it."""
from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from anyformer.compress.data import run_batch
from anyformer.compress.fuse_layout import RESIDUAL, Layout
from anyformer.compress.transport import coupling, ground_cost, head_coupling, move, top_indices, transport_cost
from anyformer.tasks.base import Batch

ALIGNMENTS = ("activations", "weights")
MAX_ROWS = 4096  # token rows kept per probe: enough to tell channels apart, cheap to compare


@dataclass
class Alignment:
    """Couplings onto the target, per space: `other` (model B) and `anchor` (model A; None
    for a space the target keeps whole, where A is the target), and per block the head
    coupling of B (and A). `costs`: space -> <P, C> of B's map, on the cost scaled to max 1."""

    other: dict[str, np.ndarray] = field(default_factory=dict)
    anchor: dict[str, np.ndarray | None] = field(default_factory=dict)
    other_heads: dict[int, np.ndarray] = field(default_factory=dict)
    anchor_heads: dict[int, np.ndarray | None] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)


@contextmanager
def _recording(layout: Layout, rows: dict[str, list[torch.Tensor]]) -> Iterator[None]:
    """Inside: every forward appends the real tokens' activations of each probe of `layout`
    to rows[space] (at most MAX_ROWS rows per probe), the residual stream's from the stack."""
    state: dict[str, torch.Tensor | None] = {"mask": None}
    counts: dict[tuple[str, int], int] = {}

    def keep(space: str, probe: int, t: torch.Tensor) -> None:
        t = t.detach().float()
        mask = state["mask"]
        t = t[mask] if mask is not None and t.shape[:-1] == mask.shape else t.reshape(-1, t.shape[-1])
        seen = counts.get((space, probe), 0)
        if seen < MAX_ROWS:
            rows.setdefault(space, []).append(t[: MAX_ROWS - seen].cpu())
            counts[(space, probe)] = seen + min(len(t), MAX_ROWS - seen)

    def stack_in(module, args, kwargs):
        mask = args[1] if len(args) > 1 else kwargs.get("mask")
        state["mask"] = mask.to(torch.bool) if mask is not None else None
        keep(RESIDUAL, -1, args[0])

    def stack_out(module, args, kwargs, output):
        for i, hidden in enumerate(output[2]):
            keep(RESIDUAL, i, hidden)

    def probe(space: str, i: int, where: str):
        if where == "output":
            return lambda module, args, output: keep(space, i, output)
        return lambda module, args: keep(space, i, args[0])

    handles = [layout.stack.register_forward_pre_hook(stack_in, with_kwargs=True),
               layout.stack.register_forward_hook(stack_out, with_kwargs=True)]
    for space, probes in layout.probes.items():
        for i, (module, where) in enumerate(probes):
            hook = probe(space, i, where)
            handles.append(module.register_forward_hook(hook) if where == "output" else module.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def activation_features(model: nn.Module, layout: Layout, batches: list[Batch], device: torch.device) -> dict[str, torch.Tensor]:
    """Space -> [channels, samples]: each channel's activations over the calibration tokens
    (a shared block's from every layer that runs it; q-k: the queries' then the keys')."""
    rows: dict[str, list[torch.Tensor]] = {}
    model.eval()
    with _recording(layout, rows):
        for batch in batches:
            run_batch(model, batch, device)
    return {space: torch.cat(rows[space]).T.double() for space in layout.sizes if space in rows}


def weight_features(state: dict[str, torch.Tensor], layout: Layout, space: str,
                    residual: np.ndarray | None) -> torch.Tensor:
    """[channels, k]: each channel's slices of the tensors with an axis in `space`, their
    residual axis carried by `residual` (None: kept); a tensor with another axis in an
    unaligned space (or, for the residual space, in any space) is left out."""
    parts = []
    for key, axes in layout.axes.items():
        mine = [a for a, ax in axes.items() if ax.space == space]
        if not mine or key in layout.aliases:
            continue
        others = {a: ax for a, ax in axes.items() if ax.space != space}
        if any(ax.space != RESIDUAL or space == RESIDUAL for ax in others.values()):
            continue
        t = state[key].detach().double().cpu()
        for a, ax in others.items():
            if residual is not None:
                t = move(t, a, residual, ax.side)
        parts.append(torch.movedim(t, mine[0], 0).reshape(t.shape[mine[0]], -1))
    if not parts:
        raise ValueError(f"no tensor gives weight features for space {space!r}")
    return torch.cat(parts, dim=1)


def _features(mode: str, space: str, acts: dict[str, torch.Tensor] | None, state: dict[str, torch.Tensor],
              layout: Layout, residual: np.ndarray | None) -> torch.Tensor:
    return acts[space] if mode == "activations" else weight_features(state, layout, space, residual)


def comparable(features: torch.Tensor, mode: str) -> torch.Tensor:
    """Features [channels, k] as the cost compares them (the reference's preprocessing):
    activations standardised per channel (z-scores over the samples, so a channel is matched
    by how it varies, not by its scale or offset), weights scaled to unit norm per channel."""
    if mode == "activations":
        centred = features - features.mean(dim=1, keepdim=True)
        return centred / (centred.std(dim=1, keepdim=True) + 1e-9)
    return features / (features.norm(dim=1, keepdim=True) + 1e-9)


def _single(source: torch.Tensor, target: torch.Tensor, solver: str, reg: float) -> tuple[np.ndarray, float]:
    cost = ground_cost(source, target)
    plan = coupling(cost, solver, reg)
    top = float(cost.max()) if cost.size else 0.0
    return plan, transport_cost(plan, cost / top if top > 0 else cost)


def _head_keep(qk: torch.Tensor, vo: torch.Tensor, heads: int, kept: int, head_dim: int) -> torch.Tensor:
    """Neuron indices of the `kept` heads with the largest q-k and v-o feature norm."""
    norm = torch.cat([qk.reshape(heads, -1), vo.reshape(heads, -1)], dim=1).norm(dim=1)
    chosen = top_indices(norm, kept)
    return (chosen[:, None] * head_dim + torch.arange(head_dim)).flatten()


def align(anchor: nn.Module, other: nn.Module, layouts: tuple[Layout, Layout, Layout], batches: list[Batch],
          device: torch.device, mode: str = "activations", solver: str = "emd", reg: float = 0.08) -> Alignment:
    """The couplings carrying `other` (and, where the target is narrower, `anchor`) onto the
    target; `layouts` = (anchor's, other's, target's). Widths may differ between the models;
    the target's never exceed the anchor's (its channels are a subset of the anchor's, the
    largest by raw feature norm; the costs compare `comparable` features)."""
    lay_a, lay_b, lay_t = layouts
    state_a, state_b = anchor.state_dict(), other.state_dict()
    acts_a = acts_b = None
    if mode == "activations":
        acts_a = activation_features(anchor, lay_a, batches, device)
        acts_b = activation_features(other, lay_b, batches, device)
    result = Alignment()

    def pair(space: str, res_a: np.ndarray | None, res_b: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        return (_features(mode, space, acts_a, state_a, lay_a, res_a), _features(mode, space, acts_b, state_b, lay_b, res_b))

    def one_space(space: str, res_a: np.ndarray | None, res_b: np.ndarray | None) -> None:
        fa, fb = pair(space, res_a, res_b)
        ca, cb = comparable(fa, mode), comparable(fb, mode)
        if lay_t.sizes[space] == lay_a.sizes[space]:
            result.anchor[space] = None  # the target is the anchor's own space
            target = ca
        else:
            target = ca[top_indices(fa.norm(dim=1), lay_t.sizes[space])]
            result.anchor[space] = _single(ca, target, solver, reg)[0]
        result.other[space], result.costs[space] = _single(cb, target, solver, reg)

    # The residual stream first: every other space's weight features read it.
    one_space(RESIDUAL, None, None)
    res_a, res_b = result.anchor[RESIDUAL], result.other[RESIDUAL]
    grouped = {s for g in lay_t.groups.values() for s in g[:2]}
    for space in lay_t.sizes:
        if space != RESIDUAL and space not in grouped:
            one_space(space, res_a, res_b)

    for b, (qk, vo, heads_t, _) in lay_t.groups.items():
        heads_a, head_dim_a = lay_a.groups[b][2:]
        raw = [pair(s, res_a, res_b) for s in (qk, vo)]
        ca, cb = [comparable(fa, mode) for fa, _ in raw], [comparable(fb, mode) for _, fb in raw]
        keep = None if heads_t == heads_a else _head_keep(raw[0][0], raw[1][0], heads_a, heads_t, head_dim_a)
        target = ca if keep is None else [c[keep] for c in ca]
        p_heads, plans = head_coupling(cb, target, (lay_b.groups[b][2], heads_t), solver, reg)
        result.other_heads[b], result.other[qk], result.other[vo] = p_heads, plans[0], plans[1]
        for space, plan, source, goal in zip((qk, vo), plans, cb, target):
            cost = ground_cost(source, goal)
            top = float(cost.max()) if cost.size else 0.0
            result.costs[space] = transport_cost(plan, cost / top if top > 0 else cost)
        if keep is None:
            result.anchor_heads[b] = result.anchor[qk] = result.anchor[vo] = None
        else:
            a_heads, a_plans = head_coupling(ca, target, (heads_a, heads_t), solver, reg)
            result.anchor_heads[b], result.anchor[qk], result.anchor[vo] = a_heads, a_plans[0], a_plans[1]
    return result


def carry(state: dict[str, torch.Tensor], layout: Layout, plans: dict[str, np.ndarray | None]) -> dict[str, torch.Tensor]:
    """`state` moved onto the target's channels: every axis of every tensor by its space's
    plan (None: kept); tied tensors once, under each of their keys."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key in layout.aliases:
            continue
        t = tensor.detach()
        for axis, ax in layout.axes.get(key, {}).items():
            plan = plans.get(ax.space)
            if plan is not None:
                t = move(t.cpu(), axis, plan, ax.side)
        out[key] = t.cpu()
    for key, first in layout.aliases.items():
        out[key] = out[first]
    return out
