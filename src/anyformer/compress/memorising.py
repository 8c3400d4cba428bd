"""Memorising neurons ("To grok or not to grok: Disentangling generalization and
memorization on corrupted algorithmic datasets", Doshi et al. 2023): on modular arithmetic a
neuron that implements the rule is periodic in the operands, its activation over the (a, b)
grid concentrated on a few Fourier frequencies; one that memorises corrupted labels is not.
The paper tells them apart by the inverse participation ratio (IPR) of a neuron's Fourier
spectrum and prunes the low-IPR ones; here the spectrum is that of the neuron's activation
at the answer position over every equation (2-D DFT over (a, b), the constant term left
out): IPR = sum_k P_k^2 / (sum_k P_k)^2 of the power P, in [1 / #frequencies, 1]."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.errors import ConfigError


def spectrum_ipr(activations: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[hidden] IPR of each neuron from its activations [A * B, hidden] on the a-major grid."""
    a, b = grid
    maps = activations.float().reshape(a, b, -1).permute(2, 0, 1)
    power = torch.fft.fft2(maps).abs().pow(2).flatten(1)
    power[:, 0] = 0.0  # the mean activation says nothing of periodicity
    total = power.sum(1).clamp_min(1e-30)
    return power.pow(2).sum(1) / total.pow(2)


@torch.no_grad()
def fourier_ipr(units: dict[int, dict[str, nn.Module]], model: nn.Module, task, device: torch.device) -> dict[tuple[int, str], torch.Tensor]:
    """(block, path) -> [hidden] IPR of each hidden unit (high: periodic, generalising; low:
    memorising), from the activations at the last token over every equation of the task."""
    grid_of = getattr(task, "operand_grid", None)
    if not callable(grid_of):
        raise ConfigError(f"--neurons-criterion memorising reads each neuron over every operand pair; task "
                          f"{getattr(task, 'name', None)!r} has no operand grid (use the modular task)")
    tokens, grid = grid_of()
    seen: dict[tuple[int, str], list[torch.Tensor]] = {}

    def recorder(key):
        def hook(module, args):
            seen.setdefault(key, []).append(args[0][:, -1].detach().cpu())
        return hook

    handles = [ffn.hidden_linears()[1].register_forward_pre_hook(recorder((b, n)))
               for b, parts in units.items() for n, ffn in parts.items()]
    try:
        model.eval()
        model(tokens.to(device))  # one batch (p^2 four-token equations): a shared block's calls stay whole
    finally:
        for h in handles:
            h.remove()
    out = {}
    for b, parts in units.items():
        for n, ffn in parts.items():
            if (b, n) not in seen:  # a path no layer runs: nothing to keep it for
                out[(b, n)] = torch.zeros(ffn.hidden_linears()[1].in_features)
                continue
            # A block shared across layers is seen once per layer: its units are judged on the last.
            out[(b, n)] = spectrum_ipr(seen[(b, n)][-1], grid)
    return out
