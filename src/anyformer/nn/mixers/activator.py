"""Activator's GLU gating unit in the place of attention."""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import unknown
from anyformer.nn.ffn.mlp import scaled_width
from anyformer.nn.mixers.base import TokenMixer
from anyformer.nn.ranges import Epsilon, PositiveFloat
from anyformer.registry import register

# The paper's ablation: GEGLU (its default), SwiGLU and ReGLU gates.
GATE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "silu": F.silu,
    "relu": F.relu,
}
GateActivation = Literal[tuple(GATE_ACTIVATIONS)]


@register("mixer", "activator")
class ActivatorGatingUnit(TokenMixer):
    """Activator GLU unit (Abdullah & Aydin 2024). x: [B, L, D] -> [B, L, D].

    y = (LN(act(x W_u)) * LN(x W_v)) W_o, with W_u, W_v: D -> e = expansion * D, ONE
    LayerNorm over e (its scale and shift shared by both branches, as in the authors'
    code) and act = gelu (GEGLU, the paper's choice; silu and relu are its SwiGLU and
    ReGLU ablations). The unit acts on the channel dimension of each token alone: it
    mixes no tokens. That is the paper's design as its reference implementation
    (github.com/Abdullah-88/Activator) writes it: every nn.Linear acts on the last
    (channel) axis of [B, N, D] patch tokens, nothing transposes to the token axis, and
    tokens meet only in the final mean pooling. The reference model has no position
    embedding. Because no token sees another, a causal request and a padding mask are
    honoured trivially. The paper's option to drop the second (non-gated) MLP is
    `ffn: none` (preset `activator-lite`)."""

    complexity = "L"
    subquadratic = True
    mixes_tokens = False
    paper = "Activator: GLU Activations as The Core Functions of a Vision Transformer (Abdullah & Aydin 2024)"
    accepts_token_subset = True  # it acts on each token alone: a filtered subset is fine

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, expansion: PositiveFloat = 2.0,
                 activation: GateActivation = "gelu", bias: bool = True, eps: Epsilon = 1e-5) -> None:
        super().__init__(dim, heads, max_len, causal, grid)
        if activation not in GATE_ACTIVATIONS:
            raise unknown("activation of mixer 'activator'", activation, GATE_ACTIVATIONS)
        e = scaled_width(dim, expansion, "mixer 'activator'", "expansion")
        self.act = GATE_ACTIVATIONS[activation]
        self.u_proj = nn.Linear(dim, e, bias=bias)
        self.v_proj = nn.Linear(dim, e, bias=bias)
        # One norm for both branches: the reference normalises u and v with the same module.
        self.norm = nn.LayerNorm(e, eps=eps)
        self.o_proj = nn.Linear(e, dim, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x, mask)
        u = self.norm(self.act(self.u_proj(x)))
        v = self.norm(self.v_proj(x))
        return self.o_proj(u * v)
