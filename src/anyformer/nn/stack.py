"""The layer schedule as one part: which distinct block each layer runs, and what happens
around it.

A model of `depth` layers holds fewer distinct blocks when weights are shared across depth
(`schedule.share`: blocks reused cyclically, 0,1,0,1; `schedule.repeat`: SReT-style
recursion, 0,0,1,1). Per-layer overrides give a distinct block its own mixer / ffn spec.
A transition (Informer's distilling) may sit between consecutive layers and shorten what
later layers see, so each block is built for the longest input it gets. Layers can be
dropped (weights kept), residual paths pruned, and stochastic depth rises linearly with
depth (DeiT). The editing methods (`drop_layers`, `prune_path`, `replace`) are what
compression, pruning and checkpoint import use, on every arch alike.

A block is any module called as block(x [B, L, D], mask Bool[B, L] | None, drop_path: float,
skip: frozenset[str]) -> [B, L, D] with `path_names`, `part(name)` and `replace(name, module)`
(see nn/block.py's Block)."""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from anyformer import registry
from anyformer.config import ComponentSpec, ModelConfig
from anyformer.errors import ConfigError
from anyformer.nn.block import BlockContext, Grid, LayerSpec, make_block

BlockFn = Callable[[LayerSpec, BlockContext], nn.Module]
PartArg = nn.Module | Callable[[nn.Module], nn.Module] | None
NO_SKIP: frozenset[str] = frozenset()


def _split_heads(mixer: ComponentSpec, i: int) -> tuple[ComponentSpec, int | None]:
    """An override's mixer -> (its spec without `heads`, the heads it sets for its layers or
    None): heads is a model value (every mixer is built with it), so it travels in the
    block context, not as a mixer option."""
    heads = mixer.options.get("heads")
    if heads is None:
        return mixer, None
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ConfigError(f"model.schedule.overrides[{i}].mixer.heads must be an integer >= 1, got {heads!r}")
    return ComponentSpec(name=mixer.name, **{k: v for k, v in mixer.options.items() if k != "heads"}), heads


def parameter_counter() -> Callable[[nn.Module | None], int]:
    """count(module) -> its parameters not counted before (tied or shared tensors once)."""
    seen: set[int] = set()

    def count(module: nn.Module | None) -> int:
        total = 0
        for p in module.parameters() if module is not None else ():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        return total

    return count


class LayerStack(nn.Module):
    """`depth` layers over distinct `blocks`: tokens [B, L, D], mask Bool[B, L] | None ->
    (tokens [B, L', D], mask [B, L'], hidden: every layer's output). L' < L only after
    transitions. Layer indices are the config's (`schedule.drop`, `schedule.prune`).

    `length` / `grid`: the input's token count and grid, or one per layer (staged archs,
    whose layers see different lengths). `block_fn(spec, ctx)` builds a distinct block
    (default `make_block`); `depth` defaults to `config.depth`."""

    def __init__(self, config: ModelConfig, ctx: BlockContext, length: int | Sequence[int],
                 grid: Grid | Sequence[Grid] = None, block_fn: BlockFn = make_block,
                 depth: int | None = None) -> None:
        super().__init__()
        s = config.schedule
        depth = config.depth if depth is None else depth
        r = s.repeat
        n_blocks = s.share or -(-depth // r)
        self.layer_blocks: list[int] = [i // r if r > 1 else i % n_blocks for i in range(depth)]
        mixer_for: list[ComponentSpec] = [config.mixer] * n_blocks
        ffn_for: list[ComponentSpec] = [config.ffn] * n_blocks
        heads_for: list[int] = [ctx.heads] * n_blocks
        for i, ov in enumerate(s.overrides):
            mixer, heads = _split_heads(ov.mixer, i) if ov.mixer is not None else (None, None)
            for layer in ov.indices(depth):
                b = self.layer_blocks[layer]
                if mixer is not None:  # a mixer override sets the heads too (model.heads unless given)
                    mixer_for[b], heads_for[b] = mixer, heads or ctx.heads
                ffn_for[b] = ov.ffn or ffn_for[b]

        # Registered before the blocks, as in earlier versions: parameters keep their order.
        n_trans = depth - 1 if s.transition is not None else 0
        self.transitions = nn.ModuleList(
            registry.build("transition", s.transition.name, dim=config.dim, **s.transition.options) for _ in range(n_trans)
        )
        self.lengths, self.grids = self._shapes(length, grid, depth)
        blocks: dict[int, nn.Module] = {}
        for layer, b in enumerate(self.layer_blocks):
            if b not in blocks:  # first use builds it, for the longest input it will see
                spec = LayerSpec(layer, mixer_for[b], ffn_for[b], self.lengths[layer], self.grids[layer])
                blocks[b] = block_fn(spec, ctx if heads_for[b] == ctx.heads else dataclasses.replace(ctx, heads=heads_for[b]))
        self.blocks = nn.ModuleList(blocks[b] for b in range(n_blocks))

        bad = [i for i in s.drop if not 0 <= i < depth]
        if bad:
            raise ConfigError(f"model.schedule.drop: layers {bad} outside 0..{depth - 1}")
        self.dropped: set[int] = set(s.drop)
        self.skip: dict[int, frozenset[str]] = {}
        for layer, names in s.pruned(depth, config.layout).items():
            for name in sorted(names):
                self.prune_path(layer, name)
        # Stochastic depth, DeiT's linear rule: layer i drops its branches at rate p * i / (depth - 1).
        p = config.drop_path
        self.drop_path_rates = [p * i / (depth - 1) if depth > 1 else p for i in range(depth)]

    def _shapes(self, length: int | Sequence[int], grid: Grid | Sequence[Grid], depth: int
                ) -> tuple[list[int], list[Grid]]:
        """Per-layer (longest input, grid): as given, or following the transitions."""
        if not isinstance(length, int):
            grids = list(grid) if grid is not None else [None] * depth
            if len(length) != depth or len(grids) != depth or self.transitions:
                raise ValueError(f"per-layer lengths and grids need one entry per layer ({depth}) and no transition")
            return list(length), grids
        lengths, grids = [length], [grid]
        for layer in range(1, depth):
            t = self.transitions[layer - 1] if self.transitions else None
            lengths.append(t.out_length(lengths[-1]) if t is not None else lengths[-1])
            grids.append(t.out_grid(grids[-1]) if t is not None else grids[-1])
        return lengths, grids

    # ------------------------------------------------------------ reading

    @property
    def depth(self) -> int:
        return len(self.layer_blocks)

    @property
    def out_length(self) -> int:
        """Tokens the last layer outputs (what the head reads)."""
        return self.lengths[-1]

    @property
    def path_names(self) -> tuple[str, ...]:
        """Residual paths of every layer ('mixer', 'ffn', and 'ffn2' for macaron)."""
        return tuple(self.blocks[0].path_names)

    def block_at(self, layer: int) -> nn.Module:
        """The (possibly shared) block layer `layer` runs."""
        return self.blocks[self.layer_blocks[self._check(layer)]]

    def layers_of(self, block: int) -> list[int]:
        """The layers that run distinct block `block`."""
        return [layer for layer, b in enumerate(self.layer_blocks) if b == block]

    def parameter_report(self, count: Callable[[nn.Module | None], int]) -> dict[str, int]:
        """'block i mixer' / 'ffn' (every other path) / 'norms' (what is left: norms, scales)."""
        report: dict[str, int] = {}
        for i, block in enumerate(self.blocks):
            report[f"block {i} mixer"] = count(block.part("mixer"))
            report[f"block {i} ffn"] = sum(count(block.part(n)) for n in block.path_names if n != "mixer")
            report[f"block {i} norms"] = count(block)
        return report

    # ------------------------------------------------------------ running

    def run(self, start: int, stop: int, tokens: torch.Tensor, mask: torch.Tensor | None,
            hidden: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Layers start .. stop-1 on tokens [B, L, D] (with the transition after each layer
        that has one, so run(a, b) then run(b, c) equals run(a, c)); appends each layer's
        output to `hidden` when given. -> (tokens, mask)."""
        if not 0 <= start <= stop <= self.depth:
            raise ValueError(f"layers {start}..{stop} outside 0..{self.depth}")
        for layer in range(start, stop):
            if layer not in self.dropped:
                block = self.blocks[self.layer_blocks[layer]]
                # A shared block runs at several layers; depth-aware ones are told which.
                where = {"layer": layer} if getattr(block, "depth_aware", False) else {}
                tokens = block(tokens, mask, self.drop_path_rates[layer], self.skip.get(layer, NO_SKIP), **where)
            if hidden is not None:
                hidden.append(tokens)
            if layer < len(self.transitions):
                tokens, mask = self.transitions[layer](tokens, mask)
        return tokens, mask

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        """Every layer: tokens [B, L, D] -> (tokens [B, L', D], mask, hidden: depth x [B, L_i, D])."""
        hidden: list[torch.Tensor] = []
        tokens, mask = self.run(0, self.depth, tokens, mask, hidden)
        return tokens, mask, hidden

    # ------------------------------------------------------------ editing

    def _check(self, layer: int) -> int:
        if not 0 <= int(layer) < self.depth:
            raise ConfigError(f"layer {layer} outside 0..{self.depth - 1} (depth {self.depth})")
        return int(layer)

    def drop_layers(self, layers: Iterable[int]) -> None:
        """Skip these layers in the forward pass (their weights stay; `schedule.drop`)."""
        self.dropped |= {self._check(layer) for layer in layers}

    def prune_path(self, layer: int, name: str) -> None:
        """Remove residual path `name` of one layer only (`schedule.prune`, 'LAYER.NAME')."""
        names = self.block_at(layer).path_names
        if name not in names:
            raise ConfigError(f"layer {layer} has no path {name!r}; its paths: {', '.join(names)}")
        self.skip[int(layer)] = self.skip.get(int(layer), NO_SKIP) | {name}

    def replace(self, layers: Iterable[int], mixer: PartArg = None, ffn: PartArg = None,
                ffn2: PartArg = None) -> None:
        """Give these layers a new mixer / ffn / ffn2: a module (placed as is; layers of several
        distinct blocks then share it) or a factory old_module -> new_module (called once per
        distinct block). A block shared with layers not named is first copied (same weights,
        no longer tied), so only the named layers change."""
        chosen = {self._check(layer) for layer in layers}
        parts = {name: new for name, new in (("mixer", mixer), ("ffn", ffn), ("ffn2", ffn2)) if new is not None}
        for b in sorted({self.layer_blocks[layer] for layer in chosen}):
            block = self.blocks[b]
            users = self.layers_of(b)
            if not set(users) <= chosen:  # un-share: the named layers get their own copy
                block = copy.deepcopy(block)
                self.blocks.append(block)
                for layer in users:
                    if layer in chosen:
                        self.layer_blocks[layer] = len(self.blocks) - 1
            for name, new in parts.items():
                block.replace(name, new if isinstance(new, nn.Module) else new(block.part(name)))
