"""FFN hidden-unit (neuron) importance and choice for structured pruning. Two criteria:
`magnitude`, the L2 norm of a unit's weights in and out (its rows of the linears that write
it, gate and up together for a GLU, and its column of the one that reads it; a norm per
structure, as "Pruning Filters for Efficient ConvNets", Li et al. 2017, ranks filters); and
`activation`, the mean |activation| of the unit (the input of the reading linear) over the
real tokens of the calibration batches; `memorising`, on modular arithmetic, the Fourier IPR
of the unit over every operand pair (compress/memorising.py), low for memorising units. Each layer loses the same share of its units: the
scores of different layers are on different scales, so they are ranked within a layer."""
from __future__ import annotations

import math

import torch
from torch import nn

from anyformer import registry
from anyformer.compress.memorising import fourier_ipr
from anyformer.compress.prune_heads import Objective
from anyformer.errors import ConfigError, unknown

CRITERIA = ("magnitude", "activation", "memorising")


def prunable_ffns() -> str:
    return ", ".join(n for n in registry.list_components("ffn") if callable(getattr(registry.get("ffn", n), "prune_hidden", None)))


def ffn_units(stack: nn.Module, active: dict[int, list[int]]) -> dict[int, dict[str, nn.Module]]:
    """Distinct block -> {path name: ffn} for every channel-mixer path of the blocks in
    `active` that can lose hidden units (all of a block's, ffn and macaron's ffn2 alike,
    since one override spec builds both); a ConfigError when no layer's can."""
    units, refused = {}, []
    for b, layers in active.items():
        block = stack.blocks[b]
        parts = {n: block.part(n) for n in block.path_names if n != "mixer" and not getattr(block.part(n), "absent", False)}
        if parts and all(callable(getattr(p, "prune_hidden", None)) for p in parts.values()):
            units[b] = parts
        elif parts:
            refused.append(f"{next(iter(parts.values())).registry_name!r} (layers {layers})")
    if not units:
        raise ConfigError(f"--neurons-fraction: no layer's ffn can lose hidden units (ffns {', '.join(refused) or 'none'}); "
                          f"ffns that can: {prunable_ffns()}")
    return units


def magnitude(ffn: nn.Module) -> torch.Tensor:
    """[hidden] L2 norm of each unit's incoming rows and outgoing column together."""
    ins, out = ffn.hidden_linears()
    square = sum(linear.weight.detach().float().pow(2).sum(1) for linear in ins) + out.weight.detach().float().pow(2).sum(0)
    return square.sqrt()


@torch.no_grad()
def activation(units: dict[int, dict[str, nn.Module]], model: nn.Module, objective: Objective) -> dict[tuple[int, str], torch.Tensor]:
    """(block, path) -> [hidden] mean |activation| over the calibration batches' real tokens."""
    sums: dict[tuple[int, str], list] = {}
    state: dict[str, torch.Tensor | None] = {"mask": None}

    def recorder(key: tuple[int, str]):
        def hook(module, args):
            a = args[0].detach().float()
            mask = state["mask"]
            a = a[mask] if mask is not None and a.shape[:-1] == mask.shape else a.reshape(-1, a.shape[-1])
            entry = sums.setdefault(key, [0.0, 0])
            entry[0] = entry[0] + a.abs().sum(0)
            entry[1] += a.shape[0]
        return hook

    handles = [ffn.hidden_linears()[1].register_forward_pre_hook(recorder((b, n))) for b, parts in units.items() for n, ffn in parts.items()]
    try:
        model.eval()
        for i, batch in enumerate(objective.batches):
            state["mask"] = batch.mask
            objective.output(model, i)
    finally:
        for handle in handles:
            handle.remove()
    # A path no layer runs (schedule.prune) saw nothing: its units all score 0.
    return {(b, n): (sums[(b, n)][0] / max(sums[(b, n)][1], 1)) if (b, n) in sums else
            torch.zeros(ffn.hidden_linears()[1].in_features) for b, parts in units.items() for n, ffn in parts.items()}


def neuron_scores(units: dict[int, dict[str, nn.Module]], criterion: str, model: nn.Module,
                  objective: Objective) -> dict[tuple[int, str], torch.Tensor]:
    if criterion not in CRITERIA:
        raise unknown("--neurons-criterion", criterion, CRITERIA)
    if criterion == "activation":
        return activation(units, model, objective)
    if criterion == "memorising":  # Doshi et al. 2023: keep the periodic (high-IPR) units
        return fourier_ipr(units, model, objective.task, objective.batches[0].target.device)
    return {(b, n): magnitude(ffn) for b, parts in units.items() for n, ffn in parts.items()}


def choose_neurons(scores: dict[tuple[int, str], torch.Tensor], fraction: float,
                   layers: dict[int, list[int]]) -> dict[tuple[int, str], list[int]]:
    """(block, path) -> the hidden units kept (in order): the most important
    1 - `fraction` of each layer's."""
    kept = {}
    for (b, n), s in scores.items():
        size = s.numel()
        k = math.floor(fraction * size + 1e-9)
        if k < 1:
            raise ConfigError(f"--neurons-fraction {fraction} prunes 0 of the {size} hidden units of layers {layers[b]}; "
                              f"give --neurons-fraction in [{1 / size:.4g}, 1)")
        order = sorted(range(size), key=lambda i: (-float(s[i]), i))
        kept[(b, n)] = sorted(order[: size - k])
    return kept
