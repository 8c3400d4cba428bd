"""The identity norm: the ablation baseline, and what a folded norm becomes."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.registry import register


@register("norm", "none")
class NoNorm(nn.Module):
    """Identity: no normalisation (the ablation baseline). x: [..., D] -> the same x."""

    paper = "-"

    def __init__(self, dim: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x
