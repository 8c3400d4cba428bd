"""SLAB's simplified linear attention: ReLU-kernel linear attention plus a depthwise
convolution on the values."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import ConfigError
from anyformer.nn.mixers.base import refuse_padded_decoding
from anyformer.nn.mixers.linear import LinearAttention, causal_linear_attention_from
from anyformer.nn.ranges import Count, Epsilon
from anyformer.registry import register


@register("mixer", "sla")
class SimplifiedLinearAttention(LinearAttention):
    """Simplified linear attention, SLA (Guo et al. 2024): O = ReLU(Q)(ReLU(K)^T V) /
    (ReLU(Q) sum_j ReLU(K_j)) + DWC(V). x: [B, L, D] -> [B, L, D].

    DWC is a depthwise convolution over each head's value channels (shared by the heads, as
    in the reference code), k x k on the H x W token grid when `grid` is given, width k along
    the sequence otherwise; `conv: false` leaves plain ReLU linear attention. Causal: the
    linear part sums over keys j <= i and the convolution only reads the past (left padding
    in 1-D; in 2-D the kernel is masked to taps above, or left of, the centre in raster
    order, PixelCNN-style) - the paper itself defines no causal image variant. Padded
    tokens are removed from the key sums and zeroed before the convolution. The reference
    also adds a learned positional encoding to K inside the window; here positions come from
    the model's position component instead.

    Decoding (causal, 1-D): the linear part keeps its recurrent state (S, z) as 'linear'
    does, the convolution the last kernel_size - 1 value rows [B*H, Dh, k - 1] it still reads."""

    complexity = "L"
    subquadratic = True
    # input_linears() (q/k/v) is inherited from 'linear' and holds here too: the depthwise
    # convolution reads the projected values, never x itself.
    supports_decoding = True  # (S, z) plus a window of the last kernel_size - 1 values
    paper = "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive Re-parameterized Batch Normalization (Guo et al. 2024)"
    supports_kv_heads = True  # k/v repeated to the query heads by qkv()
    accepts_grid = True
    accepts_token_subset = False  # its depthwise convolution reads neighbours by index (the linear attention it extends could)

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, num_tokens: int | None = None,
                 bias: bool = True, conv: bool = True, kernel_size: Count = 5,
                 eps: Epsilon = 1e-6, chunk: Count = 64,
                 kv_heads: Count | None = None) -> None:
        super().__init__(dim, heads, max_len, causal, grid, bias=bias, kv_heads=kv_heads, feature_map="relu",
                         eps=eps, chunk=chunk)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"mixer 'sla': kernel_size must be a positive odd number, got {kernel_size}")
        self.check_grid_tokens(num_tokens, built=True)
        self.kernel_size = kernel_size
        self.dwc: nn.Module | None = None
        if conv:
            Conv = nn.Conv2d if self.grid is not None else nn.Conv1d
            # Causal 1-D convolutions pad on the left in forward(); the others pad symmetrically.
            pad = 0 if causal and self.grid is None else kernel_size // 2
            self.dwc = Conv(self.head_dim, self.head_dim, kernel_size, padding=pad, groups=self.head_dim)
            if causal and self.grid is not None:
                k = kernel_size
                taps = torch.zeros(k, k, dtype=torch.bool)
                taps[: k // 2] = True  # rows above the centre
                taps[k // 2, : k // 2 + 1] = True  # the centre row up to the centre
                self.register_buffer("causal_taps", taps, persistent=False)

    def local(self, v: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """Depthwise convolution of head-split values [B, H, L, Dh] -> [B, H, L, Dh]; causal
        1-D with a decoding `cache`, after the value rows it holds of earlier tokens."""
        B, H, L, Dh = v.shape
        v = v.reshape(B * H, L, Dh).transpose(1, 2)  # [BH, Dh, L]
        if self.grid is not None:
            gh, gw = self.grid
            self.check_grid_tokens(L)
            weight = self.dwc.weight
            if self.causal:
                weight = weight * self.causal_taps.to(weight.dtype)
            out = F.conv2d(v.reshape(B * H, Dh, gh, gw), weight, self.dwc.bias,
                           padding=self.kernel_size // 2, groups=Dh).flatten(2)
        elif self.causal:
            # Left padding only: output i reads values i - k + 1 .. i, never a later one.
            keep = self.kernel_size - 1
            past = None if cache is None else cache.get("v")
            v = F.pad(v, (keep, 0)) if past is None else torch.cat([past, v], dim=2)
            if cache is not None:
                cache["v"] = v[..., v.shape[-1] - keep:]
            out = self.dwc(v)
        else:
            out = self.dwc(v)
        return out.transpose(1, 2).reshape(B, H, L, Dh)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        q, k, v = self.qkv(x)
        cache = self.decode_cache()
        if cache is not None and self.causal:
            refuse_padded_decoding(self, mask)
            if self.grid is not None:
                raise ConfigError(f"mixer {self.name!r} on a token grid cannot decode token by token: "
                                  "its 2-D convolution needs the whole grid at once")
            out, cache["state"] = causal_linear_attention_from(F.relu(q), F.relu(k), v, self.eps, self.chunk,
                                                               cache.get("state"))
            return self.o_proj(self.merge(out if self.dwc is None else out + self.local(v, cache)))
        out = self.attend(F.relu(q), F.relu(k), v, mask)
        if self.dwc is not None:
            if mask is not None:
                v = v * mask[:, None, :, None].to(v.dtype)
            out = out + self.local(v)
        return self.o_proj(self.merge(out))
