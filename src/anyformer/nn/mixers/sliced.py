"""SReT's sliced group self-attention: attention inside contiguous groups of tokens."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from anyformer.errors import ConfigError
from anyformer.nn.mixers.base import AttentionMixer
from anyformer.registry import register


@register("mixer", "sliced")
class SlicedGroupAttention(AttentionMixer):
    """Sliced group self-attention (Shen et al. 2022, SReT). x: [B, L, D] -> [B, L, D].

    The sequence is cut into `groups` contiguous slices of ceil(L / groups) tokens and
    softmax attention runs inside each slice only (the last may be shorter), so cost falls
    from L^2 to L^2 / groups. Causal and padding masks apply inside each slice."""

    complexity = "L^2/g"
    subquadratic = True
    paper = "Sliced Recursive Transformer (Shen et al. 2022)"
    example_options = {"groups": 4}

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True, groups: int = 4) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias)
        if groups < 1:
            raise ConfigError(f"mixer 'sliced': groups must be >= 1, got {groups}")
        self.groups = groups

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        B, L, _ = x.shape
        q, k, v = self.qkv(x)
        size = -(-L // self.groups)
        n = -(-L // size)
        pad = n * size - L
        real = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
        if pad:
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
            real = F.pad(real, (0, pad), value=False)
        Dh = q.shape[-1]
        qg, kg, vg = (t.reshape(B, self.heads, n, size, Dh) for t in (q, k, v))
        allowed = real.view(B, 1, n, 1, size).expand(B, 1, n, size, size)
        if self.causal:
            allowed = allowed & torch.ones(size, size, dtype=torch.bool, device=x.device).tril()
        # Every query keeps itself, so padded queries never face an empty row.
        allowed = allowed | torch.eye(size, dtype=torch.bool, device=x.device)
        out = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=allowed)
        return self.o_proj(self.merge(out.reshape(B, self.heads, n * size, Dh)[:, :, :L]))
