"""Images -> tokens through DHVT's sequential overlapping patch embedding (SOPE)."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.errors import ConfigError
from anyformer.nn.encoders.patches import PatchEncoder, pair
from anyformer.nn.ranges import Count
from anyformer.registry import register


class ChannelAffine(nn.Module):
    """x * alpha + beta per channel of [B, C, H, W] (alpha init 1, beta init 0)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.alpha + self.beta


def make_sope(channels: int, dim: int, patch: int) -> nn.Sequential:
    """affine -> log2(patch) x [3x3 stride-2 conv + BN] with GELU between (widths doubling up
    to dim, e.g. dim/8, dim/4, dim/2, dim for patch 16) -> affine."""
    steps = patch.bit_length() - 1
    layers: list[nn.Module] = [ChannelAffine(channels)]
    c_in = channels
    for i in range(steps):
        c_out = max(1, dim >> (steps - 1 - i))
        if i:
            layers.append(nn.GELU())
        layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out)]
        c_in = c_out
    layers.append(ChannelAffine(dim))
    return nn.Sequential(*layers)


@register("encoder", "dhvt-patches")
class SequentialOverlappingPatchEncoder(PatchEncoder):
    """DHVT's SOPE (Lu et al. 2022): overlapping stride-2 3x3 convolutions with BN and GELU
    between pre- and post- channel affine maps replace ViT's linear patchify. images
    [B, C, H, W] -> tokens [B, (H/p)(W/p) (+1 cls), D]; patch size a power of two >= 2.
    DHVT uses no position embedding on top of it (set model.position: none)."""

    paper = "Bridging the Gap Between Vision Transformers and Convolutional Neural Networks on Small Datasets (Lu et al. 2022)"

    def __init__(self, dim: int, image_size: Count | tuple[Count, Count] = 32,
                 patch_size: Count | tuple[Count, Count] = 4, channels: Count = 3,
                 cls_token: bool = True) -> None:
        ph, pw = pair(patch_size)
        if ph != pw or ph < 2 or ph & (ph - 1):
            raise ConfigError(f"encoder 'dhvt-patches': patch_size must be a square power of two >= 2 (2, 4, 8, 16), got {ph}x{pw}")
        super().__init__(dim, image_size, patch_size, channels, cls_token)
        self.proj = make_sope(channels, dim, ph)
        self.batch_normalised = True
