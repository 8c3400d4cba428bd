"""Gated attention unit (FLASH's GAU): one head, shared query/key base, gated output."""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import unknown
from anyformer.nn.ffn.mlp import scaled_width
from anyformer.nn.mixers.base import TokenMixer, allowed_pairs
from anyformer.nn.ranges import Count, PositiveFloat
from anyformer.registry import register

SCORE_FNS = ("relu2", "softmax")
Scores = Literal[SCORE_FNS]


@register("mixer", "gau")
class GatedAttentionUnit(TokenMixer):
    """Gated attention unit (Hua et al. 2022, "Transformer Quality in Linear Time").

    x: [B, L, D] -> [B, L, D]. U = silu(x W_u), V = silu(x W_v) (width e = expansion * D),
    Z = silu(x W_z) (width s); Q = Z * gamma_q + beta_q, K = Z * gamma_k + beta_k
    (per-dimension scale and offset of one shared Z); A = relu(Q K^T / n_i)^2 [B, L, L]
    (the paper's squared-ReLU scores), or softmax(Q K^T / sqrt(s)) with `scores: softmax`;
    y = (U * (A V)) W_o.

    Follows renll/SeqBoat fairseq/modules/moving_average_gated_attention.py (MEGA's
    `element_attention` and `reset_parameters`): n_i is the number of keys query i may
    attend (i + 1 when causal, the real tokens under a padding mask, their intersection when
    both), so a causal output at i depends only on tokens <= i, not on how many follow;
    gamma starts at N(0, 0.02) and beta at 0, as there and in lucidrains/FLASH-pytorch
    flash_pytorch/flash_pytorch.py (OffsetScale). FLASH-pytorch's current GAU divides by
    the full length even when causal (its commit 0853186 divided by i + 1, 6b0cc2e undid
    it); that variant is not followed. Remaining differences: one head by design (the
    model's `heads` is ignored); the linear layers keep PyTorch's default init (MEGA draws
    them from N(0, 0.02)); the T5 / relative position bias, the norm and the residual are
    left to the model and the Block. Not an AttentionMixer: its projections have other
    shapes than q/k/v/o, so weights cannot be exchanged with the multi-head family."""

    complexity = "L^2"
    paper = "Transformer Quality in Linear Time (Hua et al. 2022)"
    accepts_token_subset = True  # a set operation over the tokens: a filtered subset is fine

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, expansion: PositiveFloat = 2.0,
                 qk_dim: Count = 128, scores: Scores = "relu2", bias: bool = True) -> None:
        super().__init__(dim, heads, max_len, causal, grid)
        if scores not in SCORE_FNS:
            raise unknown("scores of mixer 'gau'", scores, SCORE_FNS)
        e = scaled_width(dim, expansion, "mixer 'gau'", "expansion")
        self.scores, self.qk_dim = scores, qk_dim
        self.uv_proj = nn.Linear(dim, 2 * e, bias=bias)
        self.z_proj = nn.Linear(dim, qk_dim, bias=bias)
        # Per-dimension scale and offset turning the shared Z into Q (row 0) and K (row 1).
        # The scale starts near 0, not 1, as in MEGA / FLASH-pytorch: scores, and so the
        # unit's output, start small and grow as training needs them.
        self.gamma = nn.Parameter(torch.randn(2, qk_dim) * 0.02)
        self.beta = nn.Parameter(torch.zeros(2, qk_dim))
        self.o_proj = nn.Linear(e, dim, bias=bias)

    def attention(self, x: torch.Tensor, mask: torch.Tensor | None,
                  allowed: torch.Tensor | None = None, normaliser: float | None = None) -> torch.Tensor:
        """The attention matrix A [B, L, L] (zero where a pair is not allowed).

        `allowed` ([B or 1, L, L] bool) restricts the pairs further (a local window, as
        SeqBoat uses); `normaliser` replaces each query's allowed-key count n_i dividing the
        relu2 scores (SeqBoat divides by a fixed window size instead)."""
        L = x.shape[1]
        z = F.silu(self.z_proj(x))
        q = z * self.gamma[0] + self.beta[0]
        k = z * self.gamma[1] + self.beta[1]
        qk = q @ k.transpose(-1, -2)
        pairs = allowed_pairs(L, mask, self.causal, x.device)
        pairs = pairs[:, 0] if pairs is not None else None
        if allowed is not None:
            pairs = allowed if pairs is None else pairs & allowed
        if self.scores == "softmax":
            qk = qk / math.sqrt(self.qk_dim)
            if pairs is not None:
                qk = qk.masked_fill(~pairs, float("-inf"))
            return qk.softmax(-1)
        if normaliser is not None:
            n: torch.Tensor | float = normaliser
        elif pairs is not None:
            # Row sums of the allowed pairs: a query's scale then depends only on the keys it
            # sees (MEGA divides by the causal mask's row sums, or by the real-key count).
            # allowed_pairs lets every query see itself, so no row is empty.
            n = pairs.sum(-1, keepdim=True).clamp(min=1).to(qk.dtype)
        else:
            n = float(L)
        a = F.relu(qk / n).square()
        return a.masked_fill(~pairs, 0.0) if pairs is not None else a

    def gated(self, x: torch.Tensor, mask: torch.Tensor | None = None,
              allowed: torch.Tensor | None = None, normaliser: float | None = None) -> torch.Tensor:
        """(U * (A V)) W_o for x [B, L, D] (no input checks; see `attention` for the options)."""
        u, v = F.silu(self.uv_proj(x)).chunk(2, dim=-1)
        return self.o_proj(u * (self.attention(x, mask, allowed, normaliser) @ v))

    def activation_elements(self, batch: int, length: int) -> int:
        """The explicit [B, L, L] scores, their relu and its square (or the softmax) kept for backward."""
        return 3 * batch * length ** 2

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        return self.gated(x, mask)
