"""Linformer: keys and values projected along the length to k rows."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import ConfigError, unknown
from anyformer.nn.mixers.base import AttentionMixer
from anyformer.nn.ranges import Count
from anyformer.registry import register

# Parameter sharing of the paper's section 4: "none" one E_i, F_i per head; "headwise" one
# E, F for all heads; "kv" one matrix E = F for keys and values of all heads.
SHARING = ("none", "headwise", "kv")


@register("mixer", "linformer")
class LinformerAttention(AttentionMixer):
    """Linformer (Wang et al. 2020): softmax attention over keys and values projected along the length. x: [B, L, D] -> [B, L, D].

    head_i = softmax(q_i (E_i k_i)^T / sqrt(d)) (F_i v_i), with E_i, F_i: [k, max_len]
    learned, so time and memory grow as L * k. An input shorter than max_len uses the first
    L columns of E and F (the same as zero-padding it to max_len). `sharing`: "none" (E_i,
    F_i per head), "headwise" (one E, F for every head), "kv" (one matrix for keys and
    values of every head); the paper's "layerwise" sharing spans layers and is not offered
    by a single mixer. Padding mask: masked keys and values are zeroed before projecting,
    so padded tokens add nothing (they still occupy columns of E and F). Not causal: every
    projected row mixes all positions. `k` is capped at max_len."""

    complexity = "L*k"
    subquadratic = True
    paper = "Linformer: Self-Attention with Linear Complexity (Wang et al. 2020)"
    supports_kv_heads = True  # k/v repeated to the query heads by qkv()
    supports_causal = False
    supported_positions = frozenset()
    example_options = {"k": 8}

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 k: Count = 256, sharing: str = "headwise",
                 kv_heads: Count | None = None) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias, kv_heads=kv_heads)
        if sharing not in SHARING:
            hint = "; 'layerwise' sharing spans layers: use model.schedule.share for shared blocks" if sharing == "layerwise" else ""
            raise ConfigError(str(unknown("sharing of mixer 'linformer'", sharing, SHARING)) + hint)
        self.k = min(k, max_len)
        self.sharing = sharing
        shape = (heads, self.k, max_len) if sharing == "none" else (1, self.k, max_len)
        # Uniform in +-1/sqrt(k), as the reference implementations initialise E and F.
        bound = 1.0 / math.sqrt(self.k)
        self.proj_k = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.proj_v = None if sharing == "kv" else nn.Parameter(torch.empty(shape).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        L = x.shape[1]
        q, k, v = self.qkv(x)
        if mask is not None:
            keep = mask[:, None, :, None].to(k.dtype)
            k, v = k * keep, v * keep
        E = self.proj_k[..., :L].to(k.dtype)
        Fv = E if self.proj_v is None else self.proj_v[..., :L].to(v.dtype)
        k_low = torch.einsum("hkl,bhld->bhkd", E, k)
        v_low = torch.einsum("hkl,bhld->bhkd", Fv, v)
        out = F.scaled_dot_product_attention(q, k_low, v_low)
        return self.o_proj(self.merge(out))
