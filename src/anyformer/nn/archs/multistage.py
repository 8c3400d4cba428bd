"""Multi-stage ViT with residual spatial reduction between stages (ViT-ResNAS)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.config import ModelConfig
from anyformer.errors import ConfigError
from anyformer.nn.archs.hierarchy import from_image, image_encoder, split_depth, to_image
from anyformer.nn.ensemble import self_ensembled
from anyformer.nn.model import accept_old_keys, block_context, build_head, build_position, norm_fn, parameter_report, read_out
from anyformer.nn.ranges import Count, NonNegativeInt
from anyformer.nn.stack import LayerStack
from anyformer.registry import register


class ResidualSpatialReduction(nn.Module):
    """ViT-ResNAS residual spatial reduction: main path LayerNorm -> 2x2 stride-2 conv, plus a
    skip connection (2x2 average pooling), so the reduction starts close to a plain pooling.
    Prefix (class) tokens get the token-wise analogue: cls + Linear(LayerNorm(cls)).
    [B, P + H*W, D] on grid (H, W) -> [B, P + (H/2)(W/2), D]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.reduce = nn.Conv2d(dim, dim, 2, stride=2)
        self.prefix_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        H, W = grid
        P = x.shape[1] - H * W
        prefix, tokens = x[:, :P], x[:, P:]
        img = to_image(tokens, grid)
        main = self.reduce(to_image(self.norm(tokens), grid))
        tokens = from_image(main + F.avg_pool2d(img, 2))
        if P == 0:
            return tokens
        return torch.cat([prefix + self.prefix_proj(self.norm(prefix)), tokens], dim=1)


@register("arch", "multistage")
class MultiStageTransformer(nn.Module):
    """Multi-stage ViT of ViT-ResNAS (Liao et al. 2021): layers split into `stages`; between
    stages a residual spatial reduction halves the token grid (4x fewer tokens), so later,
    deeper layers work on coarser tokens. `schedule.repeat` recursion (SReT) runs inside
    stages. images -> tokens [B, P + H*W, D] -> ... -> head.
    `stack` holds every stage's layers, `transitions` the reductions.
    Width stays model.dim across stages (ViT-ResNAS also widens; not modelled here)."""

    paper = "Searching for Efficient Multi-Stage Vision Transformers (Liao et al. 2021)"

    def __init__(self, config: ModelConfig, stages: Count = 3, depths: list[NonNegativeInt] | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.encoder = image_encoder(c, "multistage", recursion=True)
        H, W = self.encoder.grid
        # Stage s works on the grid halved s - 1 times: H and W divisible by 2^(stages - 1). The
        # most stages are counted first, so a huge `stages` never builds 2 ** (stages - 1).
        most = max(s for s in range(1, min(H, W).bit_length() + 1) if H % 2 ** (s - 1) == 0 and W % 2 ** (s - 1) == 0)
        if stages > most:
            span = 2 ** (stages - 1) if stages <= 64 else f"2^{stages - 1}"
            raise ConfigError(f"arch 'multistage': stages {stages} halve the grid {stages - 1} times, which needs the token grid {H}x{W} divisible by {span}; valid stages: 1..{most}")
        self.stages = stages
        self.stage_depths = split_depth(c.depth, stages, depths, "multistage")
        r = c.schedule.repeat
        if any(d % r for d in self.stage_depths):
            # A recursive block runs r layers in a row; one stage must hold all of them.
            raise ConfigError(f"arch 'multistage': schedule.repeat {r} needs every stage's depth divisible by {r}, got {self.stage_depths}; set arch.depths")
        P = self.encoder.num_prefix_tokens
        self.grids = [(H >> i, W >> i) for i in range(stages)]
        self.input_drop = nn.Dropout(c.dropout)
        self.position = build_position(c, self.encoder.num_tokens)
        # Each layer is built for its stage's token count and grid.
        grids = [g for s, count in enumerate(self.stage_depths) for g in [self.grids[s]] * count]
        lengths = [P + g[0] * g[1] for g in grids]
        self.stack = LayerStack(c, block_context(c, self.encoder, self.position), lengths, grids)
        self.transitions = nn.ModuleList(ResidualSpatialReduction(c.dim) for _ in range(stages - 1))
        self.final_norm = norm_fn(c)("final") if c.final_norm else None
        self.head = build_head(c, self.encoder, P + self.grids[-1][0] * self.grids[-1][1])
        accept_old_keys(self, {"blocks.": "stack.blocks."})

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    @self_ensembled
    def forward(self, x, mask: torch.Tensor | None = None, return_hidden: bool = False):
        tokens, mask = self.encoder(x, mask)
        if mask is not None and not bool(mask.all()):
            raise ConfigError("arch 'multistage' takes whole images; a padding mask is not supported")
        if self.position.applies_to == "input":
            tokens = self.position(tokens)
        tokens = self.input_drop(tokens)
        hidden: list[torch.Tensor] = []
        layer = 0
        for s, count in enumerate(self.stage_depths):
            tokens, _ = self.stack.run(layer, layer + count, tokens, None, hidden)
            layer += count
            if s < self.stages - 1:
                tokens = self.transitions[s](tokens, self.grids[s])
        return read_out(self, tokens, None, hidden, return_hidden)

    def parameter_report(self) -> dict[str, int]:
        """Parameters per part; 'transitions' counts the reductions between stages."""
        return parameter_report(self, self.position, self.transitions)
