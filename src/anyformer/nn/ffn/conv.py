"""Convolutional feed-forward layers over the token grid."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.errors import ConfigError, ShapeError
from anyformer.nn.ffn.mlp import Activation, get_activation, hidden_size
from anyformer.nn.norms.batchnorm import require_batch_statistics
from anyformer.nn.ranges import Count, PositiveFloat
from anyformer.registry import register


@register("ffn", "conv")
class DynamicAggregationFFN(nn.Module):
    """DHVT's dynamic aggregation FFN, DAFF (Lu et al. 2022). x: [B, P + H*W, D] -> same shape.

    Patch tokens, laid out on the (H, W) grid: 1x1 conv + BN + act up to the hidden width,
    a depthwise kxk conv + BN + act with a skip around it, 1x1 conv + BN back to D. The
    prefix (class) tokens P skip the convolutions: as in DHVT they are rescaled channel-wise
    by squeeze-excitation weights pooled from the patch tokens (Linear D -> D/4 -> act ->
    Linear D/4 -> D, no sigmoid, as in the reference code). With no prefix token the SE
    weights rescale the patch tokens instead (plain squeeze-and-excitation, Hu et al. 2018),
    so the aggregation path is never dead."""

    paper = "Bridging the Gap Between Vision Transformers and Convolutional Neural Networks on Small Datasets (Lu et al. 2022)"
    needs_grid = True
    accepts_grid = True

    def __init__(self, dim: int, grid: tuple[int, int] | None = None, ratio: PositiveFloat = 4.0,
                 hidden: Count | None = None, kernel_size: Count = 3, activation: Activation = "gelu",
                 se_reduction: Count = 4) -> None:
        super().__init__()
        if grid is None:
            raise ConfigError("ffn 'conv' needs a 2-D token grid (image patches); use it with an image encoder such as 'patches' or 'dhvt-patches', or pick ffn 'mlp'")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"ffn 'conv': kernel_size must be odd and >= 1, got {kernel_size}")
        if not 1 <= se_reduction <= dim:
            raise ConfigError(f"ffn 'conv': se_reduction must be in 1..{dim}, got {se_reduction}")
        self.grid = (int(grid[0]), int(grid[1]))
        h = hidden_size(dim, ratio, hidden, "conv")
        self.act = get_activation(activation, "conv")
        self.expand = nn.Conv2d(dim, h, 1)
        self.bn1 = nn.BatchNorm2d(h)
        self.depthwise = nn.Conv2d(h, h, kernel_size, padding=kernel_size // 2, groups=h)
        self.bn2 = nn.BatchNorm2d(h)
        self.project = nn.Conv2d(h, dim, 1)
        self.bn3 = nn.BatchNorm2d(dim)
        self.compress = nn.Linear(dim, dim // se_reduction)
        self.excite = nn.Linear(dim // se_reduction, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.grid
        if x.dim() != 3 or x.shape[1] < H * W:
            raise ShapeError(f"ffn 'conv' expects [batch, prefix + {H}*{W}, dim] tokens, got {list(x.shape)}")
        B, L, D = x.shape
        require_batch_statistics(B * H * W, "ffn 'conv'", self.training)
        prefix, tokens = x[:, : L - H * W], x[:, L - H * W:]
        g = tokens.transpose(1, 2).reshape(B, D, H, W)
        g = self.act(self.bn1(self.expand(g)))
        g = g + self.act(self.bn2(self.depthwise(g)))
        g = self.bn3(self.project(g))
        weight = self.excite(self.act(self.compress(g.mean((2, 3)))))[:, None]  # [B, 1, D]
        tokens = g.flatten(2).transpose(1, 2)
        if prefix.shape[1] == 0:
            return tokens * weight
        return torch.cat([prefix * weight, tokens], dim=1)
