"""Fourier-KArAt: a learnable Kolmogorov-Arnold operator over Fourier bases in place of
softmax, in the paper's modular (low-rank) form."""
from __future__ import annotations

import math

import torch
from torch import nn

from anyformer.nn.mixers.base import AttentionMixer
from anyformer.nn.ranges import Count
from anyformer.registry import register


@register("mixer", "karat")
class FourierKArAt(AttentionMixer):
    """Modular Fourier-KArAt (Maity et al. 2025, Kolmogorov-Arnold Attention). x: [B, L, D] -> [B, L, D].

    Each score row s_i = q_i K^T / sqrt(Dh) in R^N (N = max_len keys) goes through a
    learnable KAN layer Phi: R^N -> R^r of univariate Fourier functions,
    Phi_p(s_i) = sum_j sum_{g=1..G} a[p,j,g] cos(g s_ij) + b[p,j,g] sin(g s_ij),
    and a learnable W in R^{N x r} maps it back: A_i = W Phi(s_i), the low-rank stand-in
    for the full N x N operator; y_i = A_i V. Parameters per head: cos_coef, sin_coef
    [H, r, N, G], lift (W) [H, N, r]; scores and A are [B, H, L, L]. One operator per head
    and per layer (the paper's blockwise variant). Masked keys (padding, or the future when
    causal) are left out of the sum over j and get zero weight in A, so they never reach a
    query; inputs shorter than max_len use the first L rows/columns. No row normalisation:
    the operator replaces softmax outright, with zero base activation b(x) = 0 (the paper's
    best Fourier setting).

    Init follows the paper's basis table with its "Initialized Specifications" column
    (cited as Table 6; read here from its copy on the project page, MaitySubhajit/KArAt
    docs/index.html, as the table number itself could not be checked): Fourier
    a_k, b_k ~ N(0, 1). The official code is not public (that
    repository's README says "Coming Soon"), so the rest is not checked against it: the
    table gives no init for W, which keeps U(-1/sqrt(r), 1/sqrt(r)) (nn.Linear's rule for
    fan-in r); the universal (shared across layers) mode and the other bases are not
    implemented. With N(0, 1) coefficients each Phi_p starts with std about sqrt(N G)."""

    complexity = "L^2*G*r"
    paper = "Kolmogorov-Arnold Attention: Is Learnable Attention Better For Vision Transformers? (Maity et al. 2025)"
    supports_kv_heads = True  # k/v repeated to the query heads by qkv()
    supported_positions = frozenset({"rotary"})
    example_options = {"rank": 4, "grid_size": 2}

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 grid_size: Count = 3, rank: Count = 12,
                 kv_heads: Count | None = None) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias, kv_heads=kv_heads)
        self.grid_size, self.rank = grid_size, rank
        N = max_len
        # The paper's basis table: a, b ~ N(0, 1), deliberately not scaled by 1 / sqrt(N G).
        self.cos_coef = nn.Parameter(torch.randn(heads, rank, N, grid_size))
        self.sin_coef = nn.Parameter(torch.randn(heads, rank, N, grid_size))
        # Not in the table: W gets nn.Linear's uniform rule for fan-in r.
        self.lift = nn.Parameter(torch.empty(heads, N, rank).uniform_(-1 / math.sqrt(rank), 1 / math.sqrt(rank)))

    def operator(self, scores: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """The learned attention A [B, H, L, L] from scores [B, H, L, L]; `keep` (bool,
        broadcastable) marks the (query, key) pairs that may interact."""
        L = scores.shape[-1]
        freqs = torch.arange(1, self.grid_size + 1, dtype=scores.dtype, device=scores.device)
        angle = scores[..., None] * freqs  # [B, H, L, L, G]
        cos, sin = angle.cos(), angle.sin()
        if keep is not None:
            w = keep[..., None].to(scores.dtype)
            cos, sin = cos * w, sin * w
        a, b = self.cos_coef[:, :, :L], self.sin_coef[:, :, :L]
        phi = torch.einsum("bhijg,hpjg->bhip", cos, a) + torch.einsum("bhijg,hpjg->bhip", sin, b)
        attn = torch.einsum("bhip,hjp->bhij", phi, self.lift[:, :L])
        if keep is not None:
            attn = attn * keep.to(attn.dtype)
        return attn

    def activation_elements(self, batch: int, length: int) -> int:
        """The [B, H, L, L] scores, their cos and sin at every grid frequency (the Fourier
        features the operator mixes), and the learned attention, all kept for backward."""
        return batch * self.heads * length ** 2 * (2 * self.grid_size + 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        L = x.shape[1]
        q, k, v = self.qkv(x)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        keep = None
        if self.causal:
            keep = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()[None, None]
        if mask is not None:
            km = mask[:, None, None, :]
            keep = km if keep is None else keep & km
        return self.o_proj(self.merge(self.operator(scores, keep) @ v))
