"""The absent channel mixer: blocks without a feed-forward network."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.registry import register


@register("ffn", "none")
class NoFeedForward(nn.Module):
    """No MLP, as in "Reducing the Transformer Architecture to a Minimum" (Bermeitinger et al.
    2024): the residual branch adds nothing. x: [..., D] -> zeros [..., D]; no parameters.
    A Block skips the sublayer (and builds no norms for it), so the layer is the mixer's
    residual branch alone."""

    paper = "Reducing the Transformer Architecture to a Minimum (Bermeitinger et al. 2024)"
    # Read by Sublayer: the branch is absent, not a function to normalise around.
    absent = True

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)
