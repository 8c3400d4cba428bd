"""Images -> patch tokens (ViT)."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from anyformer.errors import ConfigError, ShapeError
from anyformer.nn.encoders.base import Encoder, expect
from anyformer.nn.norms.batchnorm import require_batch_statistics
from anyformer.nn.ranges import MAX_WIDTH, Count
from anyformer.registry import register


def pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    if len(v) != 2:
        raise ConfigError(f"expected an int or [height, width], got {v!r}")
    return int(v[0]), int(v[1])


def make_conv_stem(channels: int, dim: int, patch: int) -> nn.Sequential:
    """log2(patch) stride-2 3x3 convolutions (widths doubling up to dim), then a 1x1 to dim
    (Xiao et al. 2021, "Early Convolutions Help Transformers See Better")."""
    steps = patch.bit_length() - 1
    layers: list[nn.Module] = []
    c_in = channels
    for i in range(steps):
        c_out = max(8, dim >> (steps - 1 - i))
        layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        c_in = c_out
    layers.append(nn.Conv2d(c_in, dim, 1))
    return nn.Sequential(*layers)


@register("encoder", "patches")
class PatchEncoder(Encoder):
    """Non-overlapping patch embedding (ViT, Dosovitskiy et al. 2021). images [B, C, H, W]
    -> tokens [B, (H/p)(W/p) (+1 cls), D]; `conv_stem` replaces the linear patchify with
    strided 3x3 convolutions (patch size a power of two)."""

    paper = "An Image is Worth 16x16 Words (Dosovitskiy et al. 2021)"
    modality = "images"
    # OT fusion (compress/fuse.py): each parameter -> the axis indexing the residual stream's
    # channels (None: independent of their order); permuting them there leaves the function unchanged.
    # The linear patchify only: a conv stem's inner channels (proj.0...) are not declared, so it is refused.
    residual_axes: ClassVar[dict[str, int | None]] = {"proj.weight": 0, "proj.bias": 0, "cls": 2}

    def __init__(self, dim: int, image_size: Count | tuple[Count, Count] = 32,
                 patch_size: Count | tuple[Count, Count] = 4, channels: Count = 3,
                 cls_token: bool = True, conv_stem: bool = False) -> None:
        super().__init__()
        (H, W), (ph, pw) = pair(image_size), pair(patch_size)
        if ph < 1 or pw < 1 or H % ph or W % pw:
            raise ConfigError(
                f"encoder 'patches': image_size {H}x{W} is not divisible by patch_size {ph}x{pw}; pick a patch size that divides it"
            )
        if (H // ph) * (W // pw) > MAX_WIDTH:
            raise ConfigError(f"encoder 'patches': image_size {H}x{W} / patch_size {ph}x{pw} gives more tokens than any tensor holds; lower image_size")
        self.image_size, self.patch_size, self.channels = (H, W), (ph, pw), channels
        self.grid = (H // ph, W // pw)
        self.batch_normalised = conv_stem and ph > 1  # a 1x1 patch stem has no stride-2 conv, no BatchNorm
        if conv_stem:
            if ph != pw or ph & (ph - 1):
                raise ConfigError(f"encoder 'patches': conv_stem needs a square power-of-two patch size, got {ph}x{pw}")
            self.proj = make_conv_stem(channels, dim, ph)
        else:
            self.proj = nn.Conv2d(channels, dim, (ph, pw), (ph, pw))
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if cls_token else None
        self.num_prefix_tokens = int(cls_token)
        self.num_tokens = self.grid[0] * self.grid[1] + self.num_prefix_tokens

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None):
        if isinstance(images, torch.Tensor) and images.dim() == 3 and self.channels == 1:
            images = images[:, None]
        expect(images, 4, "encoder 'patches' input images [batch, channels, height, width]", floating=True)
        if tuple(images.shape[1:]) != (self.channels, *self.image_size):
            raise ShapeError(
                f"encoder 'patches' expects images [batch, {self.channels}, {self.image_size[0]}, {self.image_size[1]}], got {list(images.shape)}"
            )
        if self.batch_normalised:  # the convolutional stems end in a BatchNorm over the grid
            require_batch_statistics(images.shape[0] * self.grid[0] * self.grid[1], f"encoder {self.registry_name!r}", self.training)
        x = self.proj(images).flatten(2).transpose(1, 2)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        return x, None

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return torch.randn(batch, self.channels, *self.image_size)
