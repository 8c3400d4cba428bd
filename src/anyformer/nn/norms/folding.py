"""Folding an input norm's affine map into the linears it feeds (SLAB's re-parameterisation,
Guo et al. 2024), by declared capabilities only:

- a norm that is an affine map at inference declares `folded_affine() -> (scale [D], shift [D])`
  (raising ConfigError while it is not one yet);
- a sublayer function that reads its input only through some linears declares
  `input_linears() -> list[nn.Linear]` (empty: not foldable);
- a residual branch exposes its input norm as `norm_in` and its function as `fn`.
"""
from __future__ import annotations

import torch
from torch import nn

from anyformer import registry


@torch.no_grad()
def fold_into(linear: nn.Linear, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """W (x * s + c) + b = (W diag(s)) x + (W c + b). scale, shift: [in_features]."""
    shift_out = linear.weight @ shift.to(linear.weight.dtype)
    linear.weight.mul_(scale.to(linear.weight.dtype))
    if linear.bias is None:
        linear.bias = nn.Parameter(shift_out)
    else:
        linear.bias.add_(shift_out)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every foldable input norm (pre/peri placement: a branch's `norm_in`) into the
    `input_linears()` of that branch's `fn` and replace it with norm 'none'; returns how many
    were folded. Call it on a model in eval mode: the folded map is each norm's eval map,
    from running statistics ('prepbn': RepBN alone, at any point of its schedule). Norms on
    the residual stream (post placement, outputs, the final norm) feed no single linear and
    stay as they are."""
    folded = 0
    for branch in list(model.modules()):  # a list: the loop replaces submodules
        norm, fn = getattr(branch, "norm_in", None), getattr(branch, "fn", None)
        affine = getattr(norm, "folded_affine", None)
        if affine is None or fn is None:
            continue
        # Ask the norm first, so a norm that cannot fold yet is reported even where the
        # branch would be skipped: the user learns the model is not in its final state.
        scale, shift = affine()
        linears = fn.input_linears() if hasattr(fn, "input_linears") else []
        if not linears:
            continue
        for linear in linears:
            fold_into(linear, scale, shift)
        branch.norm_in = registry.build("norm", "none", dim=scale.shape[0])
        folded += 1
    return folded
