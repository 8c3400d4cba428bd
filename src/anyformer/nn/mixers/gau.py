"""Gated attention unit (FLASH's GAU): one head, shared query/key base, gated output."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import ConfigError, unknown
from anyformer.nn.mixers.base import TokenMixer, allowed_pairs
from anyformer.registry import register

SCORE_FNS = ("relu2", "softmax")


@register("mixer", "gau")
class GatedAttentionUnit(TokenMixer):
    """Gated attention unit (Hua et al. 2022). x: [B, L, D] -> [B, L, D].

    U = silu(x W_u), V = silu(x W_v) (width e = expansion * D), Z = silu(x W_z) (width s);
    Q = Z * gamma_q + beta_q, K = Z * gamma_k + beta_k (per-dimension scale and offset of
    one shared Z); A = relu(Q K^T / n)^2 with n the number of real tokens (the paper's
    squared-ReLU scores), or softmax(Q K^T / sqrt(s)) with `scores: softmax`;
    y = (U * (A V)) W_o. A single head by design (the model's `heads` is ignored); the
    paper's T5 relative bias is left to the model's position component. Not an
    AttentionMixer: its projections have other shapes than q/k/v/o, so weights cannot be
    exchanged with the multi-head family."""

    complexity = "L^2"
    paper = "Transformer Quality in Linear Time (Hua et al. 2022)"

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, expansion: float = 2.0,
                 qk_dim: int = 128, scores: str = "relu2", bias: bool = True) -> None:
        super().__init__(dim, heads, max_len, causal, grid)
        if scores not in SCORE_FNS:
            raise unknown("scores of mixer 'gau'", scores, SCORE_FNS)
        e = int(round(dim * expansion))
        if e < 1 or qk_dim < 1:
            raise ConfigError(f"mixer 'gau': expansion * dim and qk_dim must be >= 1 (got {e}, {qk_dim})")
        self.scores, self.qk_dim = scores, qk_dim
        self.uv_proj = nn.Linear(dim, 2 * e, bias=bias)
        self.z_proj = nn.Linear(dim, qk_dim, bias=bias)
        # Per-dimension scale and offset turning the shared Z into Q (row 0) and K (row 1).
        self.gamma = nn.Parameter(torch.randn(2, qk_dim) * 0.02 + 1.0)
        self.beta = nn.Parameter(torch.zeros(2, qk_dim))
        self.o_proj = nn.Linear(e, dim, bias=bias)

    def attention(self, x: torch.Tensor, mask: torch.Tensor | None,
                  allowed: torch.Tensor | None = None, normaliser: float | None = None) -> torch.Tensor:
        """The attention matrix A [B, L, L] (zero where a pair is not allowed).

        `allowed` ([B or 1, L, L] bool) restricts the pairs further (a local window, as
        SeqBoat uses); `normaliser` replaces the number of real tokens n dividing the
        relu2 scores (a fixed window size keeps a local unit causal)."""
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
            n = normaliser
        else:
            n = mask.sum(-1).to(x.dtype)[:, None, None] if mask is not None else L
        a = F.relu(qk / n).square()
        return a.masked_fill(~pairs, 0.0) if pairs is not None else a

    def gated(self, x: torch.Tensor, mask: torch.Tensor | None = None,
              allowed: torch.Tensor | None = None, normaliser: float | None = None) -> torch.Tensor:
        """(U * (A V)) W_o for x [B, L, D] (no input checks; see `attention` for the options)."""
        u, v = F.silu(self.uv_proj(x)).chunk(2, dim=-1)
        return self.o_proj(u * (self.attention(x, mask, allowed, normaliser) @ v))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        return self.gated(x, mask)
