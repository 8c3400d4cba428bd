"""Spectral token mixers: FNet's parameter-free Fourier transform and GFNet's learned
global filter."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.nn.mixers.base import TokenMixer
from anyformer.nn.ranges import InitStd
from anyformer.registry import register


@register("mixer", "fnet")
class FourierMixer(TokenMixer):
    """FNet mixing (Lee-Thorp et al. 2022): y = Re(FFT_seq(FFT_hidden(x))), the real part of
    the 2-D DFT over length and hidden; no parameters. x: [B, L, D] -> [B, L, D].

    Every output mixes every token, so there is no causal form, and padded tokens would
    enter every position: both requests are refused."""

    supports_causal = False
    supports_mask = False
    complexity = "L log L"
    subquadratic = True
    paper = "FNet: Mixing Tokens with Fourier Transforms (Lee-Thorp et al. 2022)"

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None) -> None:
        super().__init__(dim, heads, max_len, causal, grid)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x, mask)
        return torch.fft.fft2(x, dim=(-2, -1)).real


@register("mixer", "gfnet")
class GlobalFilter(TokenMixer):
    """GFNet global filter layer (Rao et al. 2021): y = IFFT(K * FFT(x)) with a learned complex
    filter K per frequency and channel. x: [B, L, D] -> [B, L, D].

    With `grid=(H, W)` the tokens are an H x W image and the transform is the 2-D rfft2
    (filter [H, W//2+1, D], as in the paper); the token count must then be exactly H*W (no
    [CLS] token). Without a grid it is a 1-D rfft over the sequence of size `max_len`
    (filter [max_len//2+1, D]); shorter inputs are zero-padded to max_len, so the filter
    acts as a circular convolution over max_len positions. Padded tokens are zeroed before
    the transform, exactly as the zero-padding, so they never reach real ones. A learned
    filter spans every position: no causal form."""

    supports_causal = False
    supports_mask = True
    complexity = "L log L"
    subquadratic = True
    paper = "Global Filter Networks for Image Classification (Rao et al. 2021)"
    accepts_grid = True

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, num_tokens: int | None = None,
                 init_std: InitStd = 0.02) -> None:
        super().__init__(dim, heads, max_len, causal, grid)
        if self.grid is not None:
            H, W = self.grid
            self.check_grid_tokens(num_tokens, built=True)
            shape = (H, W // 2 + 1, dim)
        else:
            shape = (max_len // 2 + 1, dim)
        # Complex filter stored as (real, imag) pairs, initialised as the paper's code does.
        self.filter = nn.Parameter(torch.randn(*shape, 2) * init_std)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        B, L, D = x.shape
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        weight = torch.view_as_complex(self.filter.to(x.dtype).contiguous())
        if self.grid is not None:
            H, W = self.grid
            self.check_grid_tokens(L)
            spec = torch.fft.rfft2(x.view(B, H, W, D), dim=(1, 2), norm="ortho")
            return torch.fft.irfft2(spec * weight, s=(H, W), dim=(1, 2), norm="ortho").reshape(B, L, D)
        n = self.max_len
        spec = torch.fft.rfft(x, n=n, dim=1, norm="ortho")
        return torch.fft.irfft(spec * weight, n=n, dim=1, norm="ortho")[:, :L]
