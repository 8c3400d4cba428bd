"""SReT's sliced group self-attention: attention inside groups of tokens, contiguous groups
and permuted groups in alternate layers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.nn.mixers.base import AttentionMixer, allowed_pairs, blocked_attention
from anyformer.nn.ranges import Count
from anyformer.registry import register


@register("mixer", "sliced")
class SlicedGroupAttention(AttentionMixer):
    """Sliced group self-attention (Shen et al. 2022, SReT). x: [B, L, D] -> [B, L, D].

    Softmax attention runs inside groups of tokens only, so cost falls from L^2 to L^2 / g.
    As in the official code (szq0214/SReT, `SReT.py`, `Attention.forward`), even layers cut
    the sequence into `groups` contiguous slices, and odd layers (SReT's recursive passes,
    when `schedule.repeat: 2` runs each block twice) permute the tokens first and use
    `permuted_groups` (default `groups`), so information crosses slices from one layer to
    the next; `permuted_groups: 1` is global attention. A plain stack alternates the two,
    as Swin alternates shifted windows.

    Departures from the reference, each so that outputs stay deterministic and causal:
    the reference draws a fresh random permutation in training and in evaluation; here
    training draws one per call (shared by the batch, as there), and evaluation uses the
    fixed interleaved permutation (token i joins group i mod g), one draw of the same kind.
    Causal models use the interleaved groups in training too, and cut contiguous slices
    of a fixed ceil(max_len / groups) tokens, so a token's group never depends on how many
    tokens follow it. Lengths need not divide by g: the last group is padded (masked).
    Causal and padding masks and ALiBi biases apply inside each group."""

    complexity = "L^2/g"
    subquadratic = True
    depth_aware = True
    reach_layers = 2
    stochastic_in_training = True  # a fresh permutation per call on permuted layers
    paper = "Sliced Recursive Transformer (Shen et al. 2022)"
    supports_kv_heads = True  # k/v repeated to the query heads by qkv()
    example_options = {"groups": 4}

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, layer: int = 0, bias: bool = True,
                 groups: Count = 4, permuted_groups: Count | None = None,
                 kv_heads: Count | None = None) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias, kv_heads=kv_heads)
        permuted_groups = groups if permuted_groups is None else permuted_groups
        self.groups, self.permuted_groups, self.layer = groups, permuted_groups, layer

    def input_linears(self) -> list[nn.Linear]:
        """q/k/v projections: forward reads x only through them (BatchNorm folding)."""
        return [self.q_proj, self.k_proj, self.v_proj]

    def order(self, length: int, permuted: bool, device: torch.device) -> tuple[torch.Tensor, int]:
        """(order, size): slot s of the grouped sequence holds token order[s] (>= length:
        padding); groups are the consecutive runs of `size` slots."""
        g = self.permuted_groups if permuted else self.groups
        if not permuted:
            size = -(-(self.max_len if self.causal else length) // g)
            total = -(-length // size) * size
            return torch.arange(total, device=device), size
        # Past one group per token the extra groups hold only padding: the same output without
        # them (permuted_groups=1e12 allocated 8 TB of padding slots).
        g = min(g, length)
        size = -(-length // g)
        total = g * size
        if self.training and not self.causal:
            pad = torch.arange(length, total, device=device)
            return torch.cat([torch.randperm(length, device=device), pad]), size
        return torch.arange(total, device=device).view(size, g).t().reshape(-1), size

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, layer: int | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        B, L, _ = x.shape
        q, k, v = self.qkv(x)
        bias = self.score_bias(L, q.dtype)
        permuted = (self.layer if layer is None else layer) % 2 == 1
        if (self.permuted_groups if permuted else self.groups) == 1:
            allowed = allowed_pairs(L, mask, self.causal, x.device)
            if bias is not None:
                allowed = bias[None] if allowed is None else torch.where(allowed, bias[None], float("-inf"))
            return self.o_proj(self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)))

        order, size = self.order(L, permuted, x.device)
        T = order.numel()
        n = T // size
        real = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
        if T > L:
            q, k, v = (F.pad(t, (0, 0, 0, T - L)) for t in (q, k, v))
            real = F.pad(real, (0, T - L), value=False)
        Dh = q.shape[-1]
        qg, kg, vg = (t[:, :, order].reshape(B, self.heads, n, size, Dh) for t in (q, k, v))
        pos = order.view(n, size)
        allowed = real[:, order].view(B, 1, n, 1, size).expand(B, 1, n, size, size)
        if self.causal:
            allowed = allowed & (pos[:, :, None] >= pos[:, None, :])
        # Every query keeps itself, so padded queries never face an empty row.
        allowed = allowed | torch.eye(size, dtype=torch.bool, device=x.device)
        attn_mask: torch.Tensor = allowed
        if bias is not None:
            full = F.pad(bias, (0, T - L, 0, T - L))
            grouped = full[:, pos[:, :, None], pos[:, None, :]]  # [H, n, size, size]
            attn_mask = torch.where(allowed, grouped[None], float("-inf"))
        out = blocked_attention(qg, kg, vg, attn_mask=attn_mask)
        out = out.reshape(B, self.heads, T, Dh)[:, :, torch.argsort(order)][:, :, :L]
        return self.o_proj(self.merge(out))
