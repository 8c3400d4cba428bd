"""Root-mean-square normalisation (Zhang & Sennrich 2019)."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from anyformer.nn.ranges import Epsilon
from anyformer.registry import register


@register("norm", "rmsnorm")
class RMSNorm(nn.RMSNorm):
    """Root-mean-square normalisation, no centring (Zhang & Sennrich 2019). x: [..., D] -> [..., D]."""

    paper = "Root Mean Square Layer Normalization (Zhang & Sennrich 2019)"
    # OT fusion (compress/fuse.py): each parameter -> the axis indexing the residual stream's
    # channels (None: independent of their order); permuting them there leaves the function unchanged.
    residual_axes: ClassVar[dict[str, int | None]] = {"weight": 0}

    def __init__(self, dim: int, eps: Epsilon = 1e-6) -> None:
        super().__init__(dim, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)
