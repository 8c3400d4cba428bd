"""Position information. Each position module says where it acts (`applies_to`):
`input` modules add to the tokens after the encoder; `qk` modules rotate queries and keys
inside attention-family mixers; `bias` modules add to the attention scores."""
from __future__ import annotations

import math
from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import nn

from anyformer.errors import ConfigError
from anyformer.nn.ranges import FrequencyBase, InitStd
from anyformer.registry import register


class Position(nn.Module):
    """Base of positions. Every one places tokens after `offset` earlier ones (0: the
    sequence starts here), which incremental decoding needs."""

    applies_to: ClassVar[str] = "input"
    paper: ClassVar[str] = ""
    # True when a token filter (model.token_filter) may drop tokens after this position acts:
    # those added to the input are, so each kept token carries its own. Positions applied
    # inside the mixers would read a kept token's new index instead of its place.
    accepts_token_subset: ClassVar[bool] = False


@register("position", "none")
class NoPosition(Position):
    """No position information (permutation-equivariant mixers, iTransformer variate tokens)."""

    applies_to = "none"
    paper = "-"
    residual_axes: ClassVar[dict[str, int | None]] = {}  # OT fusion: nothing to align (compress/fuse.py)
    accepts_token_subset = True

    def __init__(self) -> None:
        super().__init__()


@register("position", "learned")
class LearnedPosition(Position):
    """A learned vector per position, added to the tokens (BERT, ViT, GPT-2). x: [B, L, D] -> [B, L, D]."""

    paper = "Attention Is All You Need (learned variant: BERT, Devlin et al. 2019)"
    # OT fusion (compress/fuse.py): each parameter -> the axis indexing the residual stream's
    # channels (None: independent of their order); permuting them there leaves the function unchanged.
    residual_axes: ClassVar[dict[str, int | None]] = {"weight": 1}
    accepts_token_subset = True

    def __init__(self, dim: int, num_tokens: int, init_std: InitStd = 0.02) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.weight = nn.Parameter(torch.randn(num_tokens, dim) * init_std)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return x + self.weight[offset: offset + x.shape[1]].to(x.dtype)


def sinusoid_table(length: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    idx = torch.arange(0, dim, 2, dtype=torch.float64)
    angle = pos / base ** (idx / dim)
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return table.float()


@register("position", "sinusoidal")
class SinusoidalPosition(Position):
    """Fixed sine/cosine positions added to the tokens. x: [B, L, D] -> [B, L, D]."""

    paper = "Attention Is All You Need (Vaswani et al. 2017)"
    accepts_token_subset = True

    def __init__(self, dim: int, num_tokens: int, base: FrequencyBase = 10000.0) -> None:
        super().__init__()
        self.register_buffer("table", sinusoid_table(num_tokens, dim, base), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return x + self.table[offset: offset + x.shape[1]].to(x.dtype)


@register("position", "rotary")
class RotaryPosition(Position):
    """Rotary embedding applied to queries and keys per head. q, k: [B, H, L, Dh] -> same."""

    applies_to = "qk"
    paper = "RoFormer: Enhanced Transformer with Rotary Position Embedding (Su et al. 2021)"

    def __init__(self, dim: int, heads: int, num_tokens: int, base: FrequencyBase = 10000.0,
                 fraction: Annotated[float, Field(gt=0.0, le=1.0, description="share of each head's dims that rotate")] = 1.0) -> None:
        super().__init__()
        head_dim = dim // heads
        rot = int(head_dim * fraction) // 2 * 2
        if rot < 2:
            raise ConfigError(f"rotary positions need at least 2 rotated dims per head; head dim is {head_dim}, fraction {fraction}")
        self.rot = rot  # rotated dims per head: a mixer checks its head_dim against it (set_position)
        inv = 1.0 / base ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot)
        angle = torch.arange(num_tokens, dtype=torch.float64)[:, None] * inv[None]
        self.register_buffer("cos", angle.cos().float(), persistent=False)
        self.register_buffer("sin", angle.sin().float(), persistent=False)

    def _rotate(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        L = x.shape[-2]
        cos = self.cos[offset: offset + L].to(x.dtype)
        sin = self.sin[offset: offset + L].to(x.dtype)
        xr, rest = x[..., : self.rot], x[..., self.rot:]
        x1, x2 = xr[..., : self.rot // 2], xr[..., self.rot // 2:]
        out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        return torch.cat([out, rest], dim=-1)

    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return self._rotate(q, offset), self._rotate(k, offset)


@register("position", "alibi")
class AlibiPosition(Position):
    """ALiBi: a per-head linear distance penalty added to the attention scores -> [H, L, L]."""

    applies_to = "bias"
    paper = "Train Short, Test Long: Attention with Linear Biases (Press et al. 2022)"

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.register_buffer("slopes", self.slopes_for(heads), persistent=False)

    @staticmethod
    def slopes_for(heads: int) -> torch.Tensor:
        # The paper's geometric sequence; for a head count that is not a power of two it
        # interleaves the slopes of the next power of two, as the reference code does.
        def pow2(n: int) -> list[float]:
            start = 2 ** (-8 / n)
            return [start ** (i + 1) for i in range(n)]

        if math.log2(heads).is_integer():
            s = pow2(heads)
        else:
            low = 2 ** math.floor(math.log2(heads))
            s = pow2(low) + pow2(2 * low)[0::2][: heads - low]
        return torch.tensor(s, dtype=torch.float32)

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        """[H, length, offset + length]: queries at offset.., keys from 0."""
        keys = torch.arange(offset + length, device=self.slopes.device)
        dist = (keys[None, :] - keys[offset:, None]).abs().float()
        return -self.slopes[:, None, None] * dist[None]
