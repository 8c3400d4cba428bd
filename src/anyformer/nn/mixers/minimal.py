"""Attention reduced to a minimum: collapsed or symmetric query-key matrices, no value or
output projection (Bermeitinger et al. 2024)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.nn.mixers.base import AttentionMixer, allowed_pairs
from anyformer.registry import register


class CollapsedQueryKey(nn.Module):
    """x -> x W_qk^h for every head h ([..., D] -> [..., H * D], token-wise): the product W_q^h W_k^h^T
    stored as one D x D matrix per head. `symmetric` keeps only the upper triangle
    (D(D+1)/2 free entries per head) and mirrors it, so W_qk^h = W_qk^h^T."""

    def __init__(self, dim: int, heads: int, symmetric: bool) -> None:
        super().__init__()
        self.dim, self.heads, self.symmetric = dim, heads, symmetric
        bound = 1.0 / math.sqrt(dim)  # nn.Linear's default init scale
        if symmetric:
            rows, cols = torch.triu_indices(dim, dim)
            self.register_buffer("rows", rows, persistent=False)
            self.register_buffer("cols", cols, persistent=False)
            self.weight = nn.Parameter(torch.empty(heads, rows.numel()).uniform_(-bound, bound))
        else:
            self.weight = nn.Parameter(torch.empty(heads, dim, dim).uniform_(-bound, bound))

    def matrix(self) -> torch.Tensor:
        """The per-head bilinear forms W_qk [H, D, D]."""
        if not self.symmetric:
            return self.weight
        W = self.weight.new_zeros(self.heads, self.dim, self.dim)
        W[:, self.rows, self.cols] = self.weight
        return W + W.transpose(-1, -2) - torch.diag_embed(W.diagonal(dim1=-2, dim2=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Token-wise over any leading dims, as a Linear: MoT routes the tokens of each
        # modality through their own copy as a [N, D] batch.
        return torch.einsum("...d,hde->...he", x, self.matrix()).flatten(-2)


@register("mixer", "minimal")
class MinimalAttention(AttentionMixer):
    """Reduced multi-head attention (Bermeitinger et al. 2024). x: [B, L, D] -> [B, L, D].

    `collapse_qk`: scores_h = x_i W_qk^h x_j^T / sqrt(D), one D x D matrix per head (held in
    q_proj; k_proj is the identity), the same size as W_q alone when there is one head.
    `symmetric`: scores symmetric by construction - with collapse_qk a symmetric W_qk^h
    (D(D+1)/2 parameters per head), otherwise Q = K (k_proj is the identity on the queries), half of W_q and W_k.
    `no_value`: V = x (v_proj is the identity); `no_out`: no output projection; both
    together make each output a convex combination of input tokens."""

    complexity = "L^2"
    paper = "Reducing the Transformer Architecture to a Minimum (Bermeitinger et al. 2024)"
    accepts_token_subset = True  # a set operation over the tokens: a filtered subset is fine
    # Rotary acts on Dh-wide heads, which collapsed queries are not; ALiBi is a score bias.
    supported_positions = frozenset({"alibi"})

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 collapse_qk: bool = False, symmetric: bool = False,
                 no_value: bool = False, no_out: bool = False) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias)
        self.collapse_qk, self.symmetric = collapse_qk, symmetric
        self.no_value, self.no_out = no_value, no_out
        if collapse_qk:
            self.q_proj = CollapsedQueryKey(dim, heads, symmetric)
            self.k_proj = nn.Identity()
        elif symmetric:
            self.k_proj = nn.Identity()  # keys are the queries (Q = K): scores q_i . q_j
        if no_value:
            self.v_proj = nn.Identity()
        if no_out:
            self.o_proj = nn.Identity()

    def qk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys [B, H, L, Dq]; Dq = D when collapsed, Dh otherwise."""
        if self.collapse_qk:
            B, L, D = x.shape
            q = self.q_proj(x).view(B, L, self.heads, D).transpose(1, 2)
            return q, x[:, None].expand(B, self.heads, L, D)
        q = self.split(self.q_proj(x))
        return q, (q if self.symmetric else self.split(self.k_proj(x)))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled scores [B, H, L, L] before masking (for inspection and tests)."""
        q, k = self.qk(x)
        return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        L = x.shape[1]
        q, k = self.qk(x)
        v = self.split(self.v_proj(x))
        allowed = allowed_pairs(L, mask, self.causal, x.device)
        attn_mask = allowed
        bias = self.score_bias(L, q.dtype)
        if bias is not None:
            attn_mask = bias[None] if allowed is None else bias[None].masked_fill(~allowed, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.o_proj(self.merge(out))
