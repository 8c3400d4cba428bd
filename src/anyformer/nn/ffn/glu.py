"""Gated linear unit feed-forward networks."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from anyformer.errors import unknown
from anyformer.nn.ffn.mlp import ACTIVATIONS, hidden_size, keep_index, select_linear
from anyformer.nn.ranges import Count, Dropout, PositiveFloat
from anyformer.registry import register

VARIANTS = {"geglu": "gelu", "swiglu": "silu", "reglu": "relu"}
Variant = Literal[tuple(VARIANTS)]


def glu_hidden(dim: int, ratio: float = 4.0, hidden: int | None = None, match_params: bool = True) -> int:
    """The hidden width of ffn 'glu': `hidden` when given, else ratio * dim, times 2/3 with
    `match_params` (what a checkpoint exporter writes as the intermediate size)."""
    h = hidden_size(dim, ratio, hidden, "glu")
    if match_params and hidden is None:
        h = max(1, int(round(h * 2 / 3)))
    return h


@register("ffn", "glu")
class GLUFeedForward(nn.Module):
    """GLU FFN: (act(x W) * (x V)) W2 (Shazeer 2020, "GLU Variants Improve Transformer").
    x: [..., D] -> [..., D]. `match_params` scales the hidden size by 2/3 so the three
    matrices hold as many parameters as a two-matrix MLP of the same ratio."""

    paper = "GLU Variants Improve Transformer (Shazeer 2020)"

    def __init__(self, dim: int, ratio: PositiveFloat = 4.0, hidden: Count | None = None,
                 variant: Variant = "swiglu", match_params: bool = True, bias: bool = False,
                 dropout: Dropout = 0.0) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise unknown("variant of ffn 'glu'", variant, VARIANTS)
        h = glu_hidden(dim, ratio, hidden, match_params)
        self.act = ACTIVATIONS[VARIANTS[variant]]
        self.gate = nn.Linear(dim, h, bias=bias)
        self.up = nn.Linear(dim, h, bias=bias)
        self.down = nn.Linear(h, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def input_linears(self) -> list[nn.Linear]:
        """gate and up alone read the input x, so an input affine map (a folded BatchNorm) moves into them."""
        return [self.gate, self.up]

    def hidden_linears(self) -> tuple[list[nn.Linear], nn.Linear]:
        """(gate and up, whose rows are the hidden units; down, whose columns read them)."""
        return [self.gate, self.up], self.down

    def prune_hidden(self, keep: list[int]) -> None:
        """Keep hidden units `keep` only: their gate and up rows together, down columns."""
        idx = keep_index(keep, self.gate.out_features, "glu", self.gate.weight.device)
        self.gate, self.up = select_linear(self.gate, rows=idx), select_linear(self.up, rows=idx)
        self.down = select_linear(self.down, cols=idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.drop(self.act(self.gate(x)) * self.up(x)))
