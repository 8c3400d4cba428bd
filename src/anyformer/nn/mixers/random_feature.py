"""Random-feature self-attention: frozen random query-key matrices, trainable values, every token
a query (an extension of Fu et al. 2023; the paper's own layer is the `random-feature` head)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from anyformer.nn.mixers.minimal import MinimalAttention
from anyformer.nn.ranges import QKMean, QKStd
from anyformer.registry import register


@register("mixer", "random-feature")
class RandomFeatureAttention(MinimalAttention):
    """Random-feature self-attention, extending Fu et al. 2023's single-query layer to every token. x: [B, L, D] -> [B, L, D].

    Not the paper's model: the paper reads one separate query x_0 over the keys with many
    heads, exp(.)/N weights and a value vector per head; that model is the `random-feature`
    head. This mixer keeps what carries over to self-attention: each of the model's H heads
    scores tokens with a frozen random query-key matrix W_h (the product W_q W_k^T, sampled
    directly as the paper does), s_ij = <W_h, u_i u_j^T> = u_i^T W_h u_j on the unit tokens
    u = x / |x| (the paper's inputs lie on the unit sphere), W_h = qk_mean * I + qk_std * G_h,
    G_h standard Gaussian; qk_mean > 0 is the paper's biased sampling. Every token attends to
    all tokens (softmax, padding mask, optional causal mask / ALiBi), and the trainable value
    and output projections (v_proj, o_proj) stand in for the paper's value vectors.

    Scoring unit tokens is what keeps the biased variant from collapsing: on raw tokens the
    mean term added qk_mean * |x|^2 / sqrt(D) ~ qk_mean * sqrt(D) to a token's own score
    (self-weight 0.98 at D = 64, qk_mean = 1), on unit tokens it adds exactly qk_mean.
    qk_std = 1/2 gives O(1) scores. W_h lives in q_proj (k_proj is the identity) with
    requires_grad False, so it is saved and moved by .to() but no optimizer changes it."""

    paper = "What can a Single Attention Layer Learn? A Study Through the Random Features Lens (Fu et al. 2023)"

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 qk_mean: QKMean = 0.0, qk_std: QKStd = 0.5) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias, collapse_qk=True)
        self.qk_mean, self.qk_std = qk_mean, qk_std
        with torch.no_grad():
            W = self.q_proj.weight  # [H, D, D]
            W.normal_(0.0, 1.0).mul_(qk_std)
            W.add_(qk_mean * torch.eye(dim, dtype=W.dtype))
        W.requires_grad_(False)

    def qk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries u W_h (times sqrt(D)) and keys u [B, H, L, D] of the unit tokens u."""
        B, L, D = x.shape
        u = F.normalize(x, dim=-1)
        # Attention divides q . k by sqrt(D) (MinimalAttention.scores, scaled_dot_product_attention);
        # multiplying it back in makes the score exactly u_i^T W_h u_j.
        q = self.q_proj(u).view(B, L, self.heads, D).transpose(1, 2) * math.sqrt(D)
        return q, u[:, None].expand(B, self.heads, L, D)
