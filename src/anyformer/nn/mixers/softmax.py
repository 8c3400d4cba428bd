"""Full softmax attention through PyTorch's scaled_dot_product_attention."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.nn.mixers.base import AttentionMixer, allowed_pairs, cached_pairs, refuse_padded_decoding
from anyformer.nn.ranges import Count, Dropout
from anyformer.registry import register


@register("mixer", "softmax")
class SoftmaxAttention(AttentionMixer):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017). x: [B, L, D] -> [B, L, D].

    Uses `F.scaled_dot_product_attention`, which picks FlashAttention / memory-efficient
    kernels on CUDA when no explicit mask is needed (causal alone uses `is_causal`).
    `kv_heads` < heads is grouped-query attention (Ainslie et al. 2023), SDPA's enable_gqa.
    `head_dim` apart from dim / heads is what a layer keeps when some heads are pruned
    (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): [B, L, D] still."""

    complexity = "L^2"
    paper = "Attention Is All You Need (Vaswani et al. 2017)"
    accepts_token_subset = True  # a set operation over the tokens: a filtered subset is fine
    supports_kv_heads = True
    supports_decoding = True  # a key/value cache (kv_heads of them under GQA), rotary keys kept rotated
    prunable_heads = True  # nothing but q/k/v/o_proj is per head: removing a head's rows/columns is exact
    fusable_heads = True  # per head softmax(q k^T) v through q/k/v/o_proj alone: heads and dims can be aligned

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 attn_dropout: Dropout = 0.0, kv_heads: Count | None = None,
                 head_dim: Count | None = None) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias, kv_heads=kv_heads, head_dim=head_dim)
        self.attn_dropout = attn_dropout

    def input_linears(self) -> list[nn.Linear]:
        """q/k/v projections: forward reads x only through them, so an input affine map
        (a folded BatchNorm) moves into their weights exactly."""
        return [self.q_proj, self.k_proj, self.v_proj]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        cache = self.decode_cache()
        if cache is not None:
            refuse_padded_decoding(self, mask)
            return self.o_proj(self.merge(self.decode(x, cache)))
        L = x.shape[1]
        # k, v stay at kv_heads: SDPA groups the query heads itself, without a repeated copy.
        q, k, v = self.qkv(x, expand=False)
        gqa = self.kv_heads != self.heads
        bias = self.score_bias(L, q.dtype)
        drop = self.attn_dropout if self.training else 0.0
        if mask is None and bias is None:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=self.causal, enable_gqa=gqa)
        else:
            allowed = allowed_pairs(L, mask, self.causal, x.device)
            attn_mask = allowed
            if bias is not None:
                attn_mask = bias[None]
                if allowed is not None:
                    attn_mask = attn_mask.masked_fill(~allowed, float("-inf"))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop, enable_gqa=gqa)
        return self.o_proj(self.merge(out))

    def attention_weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The softmax weights forward applies to x [B, L, D]: softmax(q k^T / sqrt(Dh) +
        ALiBi bias) over the keys each query may attend (padding and the future masked, as
        `allowed_pairs` builds them) -> [B, H, Lq, Lk], rows summing to 1; what attention
        tracking reads, computed apart so forward keeps SDPA's fused kernels."""
        mask = self.check_input(x, mask)
        L = x.shape[1]
        q, k, _ = self.qkv(x)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        bias = self.score_bias(L, scores.dtype)
        if bias is not None:
            scores = scores + bias[None]
        allowed = allowed_pairs(L, mask, self.causal, x.device)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        return scores.softmax(-1)

    def decode(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        """New tokens x [B, T, D] after the cached keys and values -> heads [B, H, T, Dh];
        their keys and values [B, kv_heads, T, Dh] are written into the cache's room."""
        q, k, v = self.qkv(x, expand=False)
        T, start = q.shape[2], self.decode_offset
        S = start + T
        held = cache.get("k")
        if held is None or held.shape[2] < S:
            # Room grows by doubling (up to max_len): appending by torch.cat would copy the
            # whole cache at every token, O(context) memory traffic per step.
            room = min(self.max_len, max(S, 2 * (held.shape[2] if held is not None else 0), 64))
            grown = [t.new_empty(t.shape[0], t.shape[1], room, t.shape[3]) for t in (k, v)]
            if held is not None:
                grown[0][:, :, :start], grown[1][:, :, :start] = cache["k"][:, :, :start], cache["v"][:, :, :start]
            cache["k"], cache["v"] = grown
        cache["k"][:, :, start:S], cache["v"][:, :, start:S] = k, v
        k, v = cache["k"][:, :, :S], cache["v"][:, :, :S]
        attn_mask = self.score_bias(T, q.dtype)
        attn_mask = attn_mask[None] if attn_mask is not None else None
        allowed = cached_pairs(T, S, x.device) if self.causal else None
        if allowed is not None:
            attn_mask = allowed if attn_mask is None else attn_mask.masked_fill(~allowed, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=self.kv_heads != self.heads)
