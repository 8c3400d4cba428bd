"""Layer normalisation (Ba et al. 2016)."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from anyformer.nn.ranges import Epsilon
from anyformer.registry import register


@register("norm", "layernorm")
class LayerNorm(nn.LayerNorm):
    """Layer normalisation over the feature dim (Ba et al. 2016). x: [..., D] -> [..., D]."""

    paper = "Layer Normalization (Ba et al. 2016)"
    # OT fusion (compress/fuse.py): each parameter -> the axis indexing the residual stream's
    # channels (None: independent of their order); permuting them there leaves the function unchanged.
    residual_axes: ClassVar[dict[str, int | None]] = {"weight": 0, "bias": 0}

    def __init__(self, dim: int, eps: Epsilon = 1e-5, bias: bool = True) -> None:
        super().__init__(dim, eps=eps, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)
