"""The identity norm: the ablation baseline, and what a folded norm becomes."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from anyformer.registry import register


@register("norm", "none")
class NoNorm(nn.Module):
    """Identity: no normalisation (the ablation baseline). x: [..., D] -> the same x."""

    paper = "-"
    # OT fusion (compress/fuse.py): each parameter -> the axis indexing the residual stream's
    # channels (None: independent of their order); permuting them there leaves the function unchanged.
    residual_axes: ClassVar[dict[str, int | None]] = {}

    def __init__(self, dim: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x
