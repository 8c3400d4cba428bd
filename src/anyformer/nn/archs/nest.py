"""NesT: nested local Transformers on image blocks, aggregated between levels."""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.config import ModelConfig
from anyformer.errors import ConfigError, ShapeError
from anyformer.nn.archs.hierarchy import blockify, from_image, image_encoder, split_depth, to_image, unblockify
from anyformer.nn.block import BlockContext, LayerSpec, make_block
from anyformer.nn.ensemble import self_ensembled
from anyformer.nn.model import accept_old_keys, block_context, build_head, build_position, norm_fn, parameter_report, read_out
from anyformer.nn.ranges import Count, NonNegativeInt
from anyformer.nn.stack import LayerStack
from anyformer.registry import register


class BlockAggregation(nn.Module):
    """NesT's block aggregation: conv 3x3 -> LayerNorm (over channels) -> max-pool 3x3 stride 2.
    [B, H*W, D] on grid (H, W) -> [B, (H/2)(W/2), D]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        h = self.conv(to_image(x, grid))
        h = self.norm(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return from_image(F.max_pool2d(h, 3, stride=2, padding=1))


@register("arch", "nest")
class NestedTransformer(nn.Module):
    """NesT (Zhang et al. 2022): the patch grid is cut into non-overlapping blocks of
    block_size x block_size tokens; each level runs Transformer layers inside every block
    independently (shared weights, a block-shared position embedding), then block
    aggregation halves the grid so 4 blocks merge into one; the last level is one block.
    images -> encoder tokens [B, H*W, D] -> ... -> head on the last level's tokens.
    `stack` holds every level's layers (level 0's first); `transitions` the aggregations.
    Needs an encoder without prefix tokens (cls_token: false); width stays model.dim."""

    paper = "Nested Hierarchical Transformer: Towards Accurate, Data-Efficient and Interpretable Visual Understanding (Zhang et al. 2022)"

    def __init__(self, config: ModelConfig, levels: Count = 3, block_size: Count = 4,
                 depths: list[NonNegativeInt] | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.encoder = image_encoder(c, "nest")
        H, W = self.encoder.grid
        # Each level halves the grid: checked by bit count first, so a huge `levels` never
        # builds 2 ** (levels - 1).
        if levels > min(H, W).bit_length():
            raise ConfigError(f"arch 'nest': levels {levels} halve the token grid {H}x{W} {levels - 1} times; at most {min(H, W).bit_length()} levels fit it")
        span = block_size * 2 ** (levels - 1)
        if H % span or W % span:
            raise ConfigError(
                f"arch 'nest': block_size {block_size} x 2^(levels-1) = {span} must divide the token grid {H}x{W}; "
                f"valid block_size for {levels} levels: {[b for b in range(1, min(H, W) + 1) if H % (b * 2 ** (levels - 1)) == 0 and W % (b * 2 ** (levels - 1)) == 0]}"
            )
        if self.encoder.num_prefix_tokens:
            raise ConfigError("arch 'nest' pools every token and takes no class token; set encoder.cls_token: false")
        self.levels, self.block_size = levels, block_size
        self.level_depths = split_depth(c.depth, levels, depths, "nest")
        self.grids = [(H >> i, W >> i) for i in range(levels)]
        T = block_size * block_size
        self.input_drop = nn.Dropout(c.dropout)
        # One position table per level, shared by the blocks of that level (attached to the
        # mixers of the level's layers when it acts inside attention).
        self.positions = nn.ModuleList(build_position(c, T) for _ in range(levels))
        level_of = [level for level, count in enumerate(self.level_depths) for _ in range(count)]

        def level_block(spec: LayerSpec, ctx: BlockContext) -> nn.Module:
            return make_block(spec, replace(ctx, position=self.positions[level_of[spec.layer]]))

        self.stack = LayerStack(c, block_context(c, self.encoder, None), T, (block_size, block_size), level_block)
        self.transitions = nn.ModuleList(BlockAggregation(c.dim) for _ in range(levels - 1))
        self.final_norm = norm_fn(c)("final") if c.final_norm else None
        self.head = build_head(c, self.encoder, T)
        # Earlier versions held the blocks on the model and the last level's position twice.
        accept_old_keys(self, {"blocks.": "stack.blocks.", "position.": None})

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    @self_ensembled
    def forward(self, x, mask: torch.Tensor | None = None, return_hidden: bool = False):
        tokens, mask = self.encoder(x, mask)
        if mask is not None and not bool(mask.all()):
            raise ShapeError("arch 'nest' takes whole images; a padding mask is not supported")
        tokens = self.input_drop(tokens)
        hidden: list[torch.Tensor] = []
        layer = 0
        for level, count in enumerate(self.level_depths):
            grid = self.grids[level]
            # The level's layers run on every image block at once: [B * blocks, T, D].
            h = blockify(tokens, grid, self.block_size)
            position = self.positions[level]
            if position.applies_to == "input":
                h = position(h)
            level_hidden: list[torch.Tensor] = []
            h, _ = self.stack.run(layer, layer + count, h, None, level_hidden)
            hidden += [unblockify(t, grid, self.block_size) for t in level_hidden]
            layer += count
            tokens = unblockify(h, grid, self.block_size)
            if level < self.levels - 1:
                tokens = self.transitions[level](tokens, grid)
        return read_out(self, tokens, None, hidden, return_hidden)

    def parameter_report(self) -> dict[str, int]:
        """Parameters per part; 'position' counts every level's table, 'transitions' the aggregations."""
        return parameter_report(self, self.positions, self.transitions)
