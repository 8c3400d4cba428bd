"""Root-mean-square normalisation (Zhang & Sennrich 2019)."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.nn.ranges import Epsilon
from anyformer.registry import register


@register("norm", "rmsnorm")
class RMSNorm(nn.RMSNorm):
    """Root-mean-square normalisation, no centring (Zhang & Sennrich 2019). x: [..., D] -> [..., D]."""

    paper = "Root Mean Square Layer Normalization (Zhang & Sennrich 2019)"

    def __init__(self, dim: int, eps: Epsilon = 1e-6) -> None:
        super().__init__(dim, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)
