"""Shared machinery of hierarchical image architectures: layers split into stages over a
token grid that shrinks between stages. Subclasses define the stage layout and the reduction."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from anyformer.config import ComponentSpec, ModelConfig
from anyformer.errors import ConfigError
from anyformer.nn.model import AnyFormer, _build, layer_path_options


def split_depth(depth: int, stages: int, depths: list[int] | None, arch: str) -> list[int]:
    """Layers per stage: `depths` as given (summing to model.depth) or model.depth spread evenly
    (earlier stages first; with depth < stages the last stages hold no layer, only reductions)."""
    if depths is not None:
        if len(depths) != stages or sum(depths) != depth or min(depths) < 0:
            raise ConfigError(f"arch {arch!r}: depths {depths} must list {stages} layer counts (>= 0) summing to model.depth {depth}")
        return list(depths)
    return [depth // stages + (1 if i < depth % stages else 0) for i in range(stages)]


class StagedModel(AnyFormer):
    """Base: an image encoder with a grid, per-layer blocks built through AnyFormer.make_block,
    per-layer mixer/ffn overrides, stochastic depth and path pruning by global layer index.
    `self.transitions` holds the between-stage reductions (so parameter_report still works)."""

    def setup(self, config: ModelConfig, arch: str) -> None:
        nn.Module.__init__(self)
        if config.encoder is None or config.head is None:
            missing = "encoder" if config.encoder is None else "head"
            raise ConfigError(f"model.{missing} is not set; name one (see `anyformer list {missing}`) or train on a task, which supplies it")
        if config.schedule.share or config.schedule.transition is not None:
            raise ConfigError(f"arch {arch!r} does not take model.schedule.share or model.schedule.transition; use arch 'stack' for them")
        if config.causal:
            raise ConfigError(f"arch {arch!r} is an image encoder and cannot be causal; set model.causal: false")
        self.config, self.arch_name = config, arch
        self.encoder = _build("encoder", config.encoder, dim=config.dim, max_len=config.max_len)
        if self.encoder.grid is None:
            raise ConfigError(f"arch {arch!r} needs a 2-D token grid; use an image encoder such as 'patches' (got {config.encoder.name!r})")
        self.input_drop = nn.Dropout(config.dropout)
        self.layer_options = layer_path_options(config)
        self.dropped = set(config.schedule.drop)
        self.mixer_for: list[ComponentSpec] = [config.mixer] * config.depth
        self.ffn_for: list[ComponentSpec] = [config.ffn] * config.depth
        for ov in config.schedule.overrides:
            for layer in ov.indices(config.depth):
                self.mixer_for[layer] = ov.mixer or self.mixer_for[layer]
                self.ffn_for[layer] = ov.ffn or self.ffn_for[layer]

    def build_position(self, num_tokens: int) -> nn.Module:
        c = self.config
        return _build("position", c.position, dim=c.dim, heads=c.heads, num_tokens=num_tokens)

    def stage_blocks(self, first_layer: int, count: int, length: int, grid: tuple[int, int] | None,
                     position: nn.Module) -> list[nn.Module]:
        """Blocks of layers first_layer .. first_layer+count-1, for inputs of `length` tokens."""
        self.position = position  # make_block attaches rotary / ALiBi from self.position
        return [self.make_block(self.mixer_for[i], self.ffn_for[i], length, grid) for i in range(first_layer, first_layer + count)]

    def run_layer(self, layer: int, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if layer in self.dropped:
            return x
        return self.blocks[layer](x, mask, **self.layer_options.get(layer, {}))

    def finish(self, tokens: torch.Tensor, mask: torch.Tensor | None, hidden: list[torch.Tensor],
               return_hidden: bool) -> Any:
        if self.final_norm is not None:
            tokens = self.final_norm(tokens, mask)
        out = self.encoder.postprocess(self.head(tokens, mask, hidden))
        return (out, hidden) if return_hidden else out


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
