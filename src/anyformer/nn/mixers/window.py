"""Swin-style (shifted) window attention over the 2-D token grid."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.errors import ConfigError
from anyformer.nn.mixers.base import AttentionMixer, blocked_attention
from anyformer.nn.ranges import Count
from anyformer.registry import register


@register("mixer", "window")
class WindowAttention(AttentionMixer):
    """Window attention (Liu et al. 2021, Swin Transformer). x: [B, H*W, D] -> [B, H*W, D].

    Tokens form the H x W `grid`; softmax attention runs inside non-overlapping window x
    window squares. `shift: true` is Swin's alternation: odd layers (the second block of
    each Swin pair, also a shared block's second run) first roll the grid by
    (-window//2, -window//2) and mask pairs that came from different regions of the
    original grid (so nothing attends across the wrap-around), then roll back; without
    it windows are the same in every layer and never exchange information. `relative_bias` adds Swin's learned bias per head for
    each relative offset in a window. A window larger than the grid shrinks to it (and then
    nothing shifts), as in Swin. Padded tokens are masked as keys."""

    complexity = "L*w^2"
    subquadratic = True
    paper = "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows (Liu et al. 2021)"
    needs_grid = True
    supports_causal = False
    depth_aware = True
    reach_layers = None  # windows, shifted every other layer: reach grows with depth
    example_options = {"window": 2, "shift": True}

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, num_tokens: int | None = None,
                 layer: int = 0, bias: bool = True, window: Count = 7, shift: bool = False,
                 relative_bias: bool = True) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias)
        gh, gw = self.grid
        self.check_grid_tokens(num_tokens, built=True)
        if window >= min(gh, gw):
            window, shift = min(gh, gw), False
        if gh % window or gw % window:
            raise ConfigError(f"mixer 'window': grid {gh}x{gw} is not divisible by window {window}; pick a window that divides both")
        self.window, self.shift, self.layer = window, window // 2 if shift else 0, layer
        self.relative_bias = None
        if relative_bias:
            self.relative_bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
            nn.init.trunc_normal_(self.relative_bias, std=0.02)
            coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
            rel = (coords[:, :, None] - coords[:, None, :]) + (window - 1)  # [2, w*w, w*w]
            self.register_buffer("relative_index", rel[0] * (2 * window - 1) + rel[1], persistent=False)
        region = torch.zeros(gh, gw, dtype=torch.long)
        if self.shift:
            # Label the regions of the original grid that the cyclic shift brings together.
            cuts = (slice(0, -window), slice(-window, -self.shift), slice(-self.shift, None))
            label = 0
            for hs in cuts:
                for ws in cuts:
                    region[hs, ws] = label
                    label += 1
        self.register_buffer("region", self.partition(region[None, :, :, None])[..., 0], persistent=False)

    def partition(self, t: torch.Tensor) -> torch.Tensor:
        """[B, gh, gw, C] -> [B, nW, w*w, C], windows in raster order."""
        B, gh, gw, C = t.shape
        w = self.window
        t = t.view(B, gh // w, w, gw // w, w, C).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(B, -1, w * w, C)

    def merge_windows(self, t: torch.Tensor) -> torch.Tensor:
        """[B, nW, w*w, C] -> [B, gh, gw, C]."""
        B, _, _, C = t.shape
        (gh, gw), w = self.grid, self.window
        t = t.view(B, gh // w, gw // w, w, w, C).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(B, gh, gw, C)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, layer: int | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        B, L, D = x.shape
        gh, gw = self.grid
        self.check_grid_tokens(L)
        grid_x = x.view(B, gh, gw, D)
        real = mask.view(B, gh, gw, 1) if mask is not None else None
        shift = self.shift if (self.layer if layer is None else layer) % 2 == 1 else 0
        if shift:
            grid_x = grid_x.roll((-shift, -shift), dims=(1, 2))
            real = real.roll((-shift, -shift), dims=(1, 2)) if real is not None else None
        win = self.partition(grid_x)  # [B, nW, N, D]
        nW, N = win.shape[1], win.shape[2]
        q, k, v = (p(win).view(B, nW, N, self.heads, -1).transpose(2, 3) for p in (self.q_proj, self.k_proj, self.v_proj))
        attn_bias = torch.zeros(1, 1, 1, N, N, dtype=q.dtype, device=x.device)
        if self.relative_bias is not None:
            rb = self.relative_bias[self.relative_index.view(-1)].view(N, N, self.heads).permute(2, 0, 1)
            attn_bias = attn_bias + rb.to(q.dtype)[None, None]
        allowed = None
        if shift:
            allowed = (self.region[:, :, :, None] == self.region[:, :, None, :])[:, :, None]  # [1, nW, 1, N, N]
        if real is not None:
            keys = self.partition(real)[..., 0][:, :, None, None, :]  # [B, nW, 1, 1, N]
            keys = keys | torch.eye(N, dtype=torch.bool, device=x.device)  # a query keeps itself
            allowed = keys if allowed is None else allowed & keys
        if allowed is not None:
            attn_bias = attn_bias.masked_fill(~allowed, float("-inf"))
        out = blocked_attention(q, k, v, attn_mask=attn_bias)  # [B, nW, H, N, Dh]
        # An explicit copy, not reshape: the exporter traces reshape as a view that the strides
        # of its decomposed attention do not allow.
        out = self.merge_windows(out.transpose(2, 3).clone(memory_format=torch.contiguous_format).view(B, nW, N, D))
        if shift:
            out = out.roll((shift, shift), dims=(1, 2))
        return self.o_proj(out.reshape(B, L, D))
