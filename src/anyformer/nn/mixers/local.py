"""Sliding-window (local) attention, optionally with DiSAN's distance penalty."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.nn.mixers.base import AttentionMixer, allowed_pairs, blocked_attention, refuse_padded_decoding
from anyformer.nn.ranges import Count, NonNegativeFloat
from anyformer.registry import register


@register("mixer", "local")
class LocalAttention(AttentionMixer):
    """Each query attends keys within distance `window` (|i - j| < window; causal: the last
    `window` positions), optionally scores minus `distance_penalty * |i - j|` as in the
    Distance-based Self-Attention Network (Im & Cho 2017). x: [B, L, D] -> [B, L, D].

    Long sequences run in blocks of `window` queries against their own and neighbouring
    key blocks, so time and memory grow as L * window rather than L^2."""

    complexity = "L*w"
    subquadratic = True
    reach_layers = None  # a window of tokens per layer: reach grows with depth
    paper = "Longformer (Beltagy et al. 2020) local window; Distance-based Self-Attention Network (Im & Cho 2017)"
    supports_kv_heads = True  # k/v repeated to the query heads by qkv()
    supports_decoding = True  # a bounded cache: the last window - 1 keys and values
    example_options = {"window": 3}

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 window: Count = 64, distance_penalty: NonNegativeFloat = 0.0,
                 kv_heads: Count | None = None) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias, kv_heads=kv_heads)
        self.window = window
        self.distance_penalty = distance_penalty

    def input_linears(self) -> list[nn.Linear]:
        """q/k/v projections: forward reads x only through them, so an input affine map
        (a folded BatchNorm) moves into their weights exactly."""
        return [self.q_proj, self.k_proj, self.v_proj]

    def _bias(self, dist: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Additive bias from signed distances i - j: -inf outside the window, minus the
        distance penalty inside."""
        inside = dist.abs() < self.window
        if self.causal:
            inside = inside & (dist >= 0)
        bias = torch.zeros(dist.shape, dtype=dtype, device=dist.device)
        if self.distance_penalty:
            bias = bias - self.distance_penalty * dist.abs().to(dtype)
        return bias.masked_fill(~inside, float("-inf"))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        L = x.shape[1]
        q, k, v = self.qkv(x)
        cache = self.decode_cache()
        if cache is not None and self.causal:
            refuse_padded_decoding(self, mask)
            return self.o_proj(self.merge(self._decode(q, k, v, cache)))
        if L <= 3 * self.window:
            out = self._full(q, k, v, mask)
        else:
            out = self._blocked(q, k, v, mask)
        return self.o_proj(self.merge(out))

    def attention_weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The softmax weights forward applies to x [B, L, D], as one [B, H, L, L] matrix
        (zero outside each query's window): what `_full` computes, and what `_blocked` does
        block by block, since keys beyond the neighbouring blocks are outside every window."""
        mask = self.check_input(x, mask)
        q, k, _ = self.qkv(x)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + self._full_bias(q, mask)
        return scores.softmax(-1)

    def _decode(self, q, k, v, cache):
        """New queries after the cached keys: only the last window - 1 of those can still be
        attended, so the cache never holds more."""
        T, offset = q.shape[2], self.decode_offset
        if "k" in cache:
            k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
        qpos = torch.arange(offset, offset + T, device=q.device)
        kpos = torch.arange(offset + T - k.shape[2], offset + T, device=q.device)
        dist = qpos[:, None] - kpos[None, :]
        bias = self._bias(dist, q.dtype)[None, None]
        if self.position is not None and self.position.applies_to == "bias":
            bias = bias - self.position.slopes.to(q.dtype)[None, :, None, None] * dist.abs().to(q.dtype)
        keep = max(self.window - 1, 0)
        cache["k"], cache["v"] = k[:, :, k.shape[2] - keep:], v[:, :, v.shape[2] - keep:]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

    def _full_bias(self, q: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The additive score bias over all L x L pairs: window and distance penalty, ALiBi,
        -inf at padded keys."""
        L = q.shape[2]
        pos = torch.arange(L, device=q.device)
        bias = self._bias(pos[:, None] - pos[None, :], q.dtype)[None, None]
        alibi = self.score_bias(L, q.dtype)
        if alibi is not None:
            bias = bias + alibi[None]
        allowed = allowed_pairs(L, mask, False, q.device)
        if allowed is not None:
            bias = bias.masked_fill(~allowed, float("-inf"))
        return bias

    def _full(self, q, k, v, mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self._full_bias(q, mask))

    def _blocked(self, q, k, v, mask):
        B, H, L, Dh = q.shape
        w = self.window
        n = -(-L // w)
        pad = n * w - L
        if pad:
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        real = torch.ones(B, L, dtype=torch.bool, device=q.device) if mask is None else mask
        real = F.pad(real, (0, pad), value=False)
        # Keys for block b: blocks b-1, b, b+1 (the window never reaches further).
        def neighbours(t: torch.Tensor) -> torch.Tensor:
            tb = t.view(*t.shape[:2], n, w, *t.shape[3:])
            prev = F.pad(tb, (0, 0) * (t.dim() - 3) + (0, 0, 1, 0))[:, :, :n]
            nxt = F.pad(tb, (0, 0) * (t.dim() - 3) + (0, 0, 0, 1))[:, :, 1:]
            return torch.cat([prev, tb, nxt], dim=3)

        kb, vb = neighbours(k), neighbours(v)  # [B, H, n, 3w, Dh]
        qb = q.view(B, H, n, w, Dh)
        qpos = torch.arange(n * w, device=q.device).view(n, w)
        kpos = torch.cat([qpos - w, qpos, qpos + w], dim=1)  # [n, 3w]
        dist = qpos[:, :, None] - kpos[:, None, :]  # [n, w, 3w]
        bias = self._bias(dist, q.dtype)
        kreal = real.view(B, 1, n, w)
        kreal = torch.cat([
            F.pad(kreal, (0, 0, 1, 0), value=False)[:, :, :n],
            kreal,
            F.pad(kreal, (0, 0, 0, 1), value=False)[:, :, 1:],
        ], dim=3)  # [B, 1, n, 3w]
        if self.position is not None and self.position.applies_to == "bias":
            slopes = self.position.slopes.to(q.dtype)
            full_bias = bias[None, None] - slopes[None, :, None, None, None] * dist.abs().to(q.dtype)[None, None]
        else:
            full_bias = bias[None, None].expand(B, H, n, w, 3 * w)
        self_pos = dist == 0  # a padded query keeps itself
        keep = kreal[:, :, :, None, :] | self_pos[None, None]
        full_bias = full_bias.masked_fill(~keep, float("-inf"))
        out = blocked_attention(qb, kb, vb, attn_mask=full_bias)
        return out.reshape(B, H, n * w, Dh)[:, :, :L]
