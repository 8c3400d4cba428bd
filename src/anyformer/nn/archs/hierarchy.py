"""What hierarchical image architectures share: layers split into stages over a token grid
that shrinks between stages; the image encoder's checks; token <-> image reshapes."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.config import ModelConfig
from anyformer.errors import ConfigError
from anyformer.nn.model import build_encoder, require_parts


def split_depth(depth: int, stages: int, depths: list[int] | None, arch: str) -> list[int]:
    """Layers per stage: `depths` as given (summing to model.depth) or model.depth spread evenly
    (earlier stages first; with depth < stages the last stages hold no layer, only reductions)."""
    if depths is not None:
        if len(depths) != stages or sum(depths) != depth or min(depths) < 0:
            raise ConfigError(f"arch {arch!r}: depths {depths} must list {stages} layer counts (>= 0) summing to model.depth {depth}")
        return list(depths)
    return [depth // stages + (1 if i < depth % stages else 0) for i in range(stages)]


def image_encoder(config: ModelConfig, arch: str, recursion: bool = False) -> nn.Module:
    """The encoder of a hierarchical image arch, after the checks they share: encoder and
    head named, no sharing or transitions (the arch reduces between stages itself), no
    recursion unless the arch takes it (`recursion`), not causal, and a 2-D token grid."""
    require_parts(config)
    s = config.schedule
    if s.share or (s.repeat > 1 and not recursion) or s.transition is not None:
        taken = "share or transition" if recursion else "share, repeat or transition"
        raise ConfigError(f"arch {arch!r} does not take model.schedule.{taken}; use arch 'stack' for them")
    if config.causal:
        raise ConfigError(f"arch {arch!r} is an image encoder and cannot be causal; set model.causal: false")
    encoder = build_encoder(config)
    if encoder.grid is None:
        raise ConfigError(f"arch {arch!r} needs a 2-D token grid; use an image encoder such as 'patches' (got {config.encoder.name!r})")
    return encoder


def blockify(x: torch.Tensor, grid: tuple[int, int], block: int) -> torch.Tensor:
    """[B, H*W, D] (raster order) -> [B * nblocks, block*block, D], blocks in raster order."""
    B, _, D = x.shape
    H, W = grid
    x = x.view(B, H // block, block, W // block, block, D).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B * (H // block) * (W // block), block * block, D)


def unblockify(x: torch.Tensor, grid: tuple[int, int], block: int) -> torch.Tensor:
    """Inverse of `blockify`: [B * nblocks, block*block, D] -> [B, H*W, D]."""
    H, W = grid
    nh, nw = H // block, W // block
    D = x.shape[-1]
    x = x.view(-1, nh, nw, block, block, D).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H * W, D)


def to_image(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[B, H*W, D] -> [B, D, H, W]."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *grid)


def from_image(x: torch.Tensor) -> torch.Tensor:
    """[B, D, H, W] -> [B, H*W, D]."""
    return x.flatten(2).transpose(1, 2)
