"""AnyFormer: encoder -> layer schedule -> final norm -> head, built from a ModelConfig."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from anyformer import registry
from anyformer.config import ComponentSpec, ModelConfig
from anyformer.errors import ConfigError
from anyformer.nn.block import Block
from anyformer.nn.mixers.base import mixers_supporting


def _build(kind: str, spec: ComponentSpec, **context: Any) -> nn.Module:
    return registry.build(kind, spec.name, **context, **spec.options)


def layer_path_options(c: ModelConfig) -> dict[int, dict[str, Any]]:
    """layer -> Block keyword arguments: the stochastic-depth rate, rising linearly with depth
    (DeiT), and pruned residual paths; only layers that need them appear."""
    options: dict[int, dict[str, Any]] = {}
    pruned = c.schedule.pruned(c.depth, c.layout)
    for layer in range(c.depth):
        opts: dict[str, Any] = {}
        rate = c.drop_path * layer / (c.depth - 1) if c.depth > 1 else c.drop_path
        if rate > 0:
            opts["drop_path"] = rate
        if layer in pruned:
            opts["skip"] = pruned[layer]
        if opts:
            options[layer] = opts
    return options


@registry.register("arch", "stack")
class AnyFormer(nn.Module):
    """Encoder -> layer schedule (with optional transitions between layers) -> final norm ->
    head. forward(x, mask=None, return_hidden=False) -> output (and every layer's hidden
    state [B, L, D] when `return_hidden`). Other architectures subclass it and reuse
    `make_block` / `make_head`."""

    paper = "Attention Is All You Need (Vaswani et al. 2017)"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.encoder is None or config.head is None:
            missing = "encoder" if config.encoder is None else "head"
            raise ConfigError(f"model.{missing} is not set; name one (see `anyformer list {missing}`) or train on a task, which supplies it")
        self.config = config
        c = config
        self.encoder = _build("encoder", c.encoder, dim=c.dim, max_len=c.max_len)
        num_tokens, grid = self.encoder.num_tokens, self.encoder.grid
        self.position = _build("position", c.position, dim=c.dim, heads=c.heads, num_tokens=num_tokens)
        self.input_drop = nn.Dropout(c.dropout)

        # The schedule: layer i runs distinct block layer_blocks[i]; sharing reuses blocks
        # cyclically, overrides replace a distinct block's mixer/ffn.
        r = c.schedule.repeat
        n_blocks = c.schedule.share or -(-c.depth // r)
        self.layer_blocks = [i // r if r > 1 else i % n_blocks for i in range(c.depth)]
        mixer_for = [c.mixer] * n_blocks
        ffn_for = [c.ffn] * n_blocks
        for ov in c.schedule.overrides:
            for layer in ov.indices(c.depth):
                b = self.layer_blocks[layer]
                if ov.mixer is not None:
                    mixer_for[b] = ov.mixer
                if ov.ffn is not None:
                    ffn_for[b] = ov.ffn
        self.dropped = set(c.schedule.drop)
        self.layer_options = layer_path_options(c)

        # Transitions (e.g. distilling) between consecutive layers change the length seen
        # by later layers: each block is built for the longest input it will get.
        n_trans = c.depth - 1 if c.schedule.transition is not None else 0
        self.transitions = nn.ModuleList(
            _build("transition", c.schedule.transition, dim=c.dim) for _ in range(n_trans)
        )
        lengths, grids = [num_tokens], [grid]
        for layer in range(1, c.depth):
            t = self.transitions[layer - 1] if self.transitions else None
            lengths.append(t.out_length(lengths[-1]) if t is not None else lengths[-1])
            grids.append(t.out_grid(grids[-1]) if t is not None else grids[-1])
        blocks: dict[int, Block] = {}
        for layer, b in enumerate(self.layer_blocks):
            if b not in blocks:
                blocks[b] = self.make_block(mixer_for[b], ffn_for[b], lengths[layer], grids[layer])
        self.blocks = nn.ModuleList(blocks[b] for b in range(n_blocks))
        if self.encoder.num_prefix_tokens and c.head.name == "cls" and not any(
                getattr(b.mixer, "mixes_tokens", True) for b in self.blocks):
            raise ConfigError(
                f"no layer's mixer mixes tokens ({mixer_for[0].name!r} acts on each token alone), so the [CLS] token "
                "the 'cls' head reads never sees the input; use head 'mean' with cls_token false (preset vit-gap)"
            )
        self.final_norm = self.make_norm() if c.final_norm else None
        self.head = self.make_head(lengths[-1])

    def make_norm(self) -> nn.Module:
        return _build("norm", self.config.norm, dim=self.config.dim)

    def make_block(self, mixer_spec: ComponentSpec, ffn_spec: ComponentSpec, length: int,
                   grid: tuple[int, int] | None, causal: bool | None = None) -> Block:
        """One block for inputs of up to `length` tokens, positions attached as configured."""
        c = self.config
        context = dict(dim=c.dim, heads=c.heads, max_len=length, grid=grid, num_tokens=length,
                       causal=c.causal if causal is None else causal)
        mixer = _build("mixer", mixer_spec, **context)
        if self.position.applies_to in ("qk", "bias"):
            mixer.set_position(self.position)
        if self.encoder.may_pad and not getattr(mixer, "supports_mask", True):
            raise ConfigError(
                f"mixer {mixer_spec.name!r} cannot honour the padding mask of encoder {c.encoder.name!r}; "
                f"drop pad_id or use one of: {mixers_supporting('supports_mask')}"
            )
        ffn = _build("ffn", ffn_spec, **context)
        ffn2 = _build("ffn", ffn_spec, **context) if c.layout == "macaron" else None
        return Block(mixer, ffn, self.make_norm, c.norm.placement, c.layout, c.dropout, ffn2, c.path_scale)

    def make_head(self, num_tokens: int) -> nn.Module:
        """The configured head, with defaults the encoder hints at (vocab, channels, ...)."""
        c = self.config
        head_cls = registry.get("head", c.head.name)
        accepted = registry.option_names(head_cls)
        hints = {k: v for k, v in self.encoder.head_hints().items() if k not in c.head.options and k in accepted}
        head = _build("head", c.head, dim=c.dim, num_tokens=num_tokens, **hints)
        if getattr(head, "tie", False):
            emb = getattr(self.encoder, "embedding", None)
            if emb is None or emb.weight.shape != head.fc.weight.shape:
                raise ConfigError(
                    f"head {c.head.name!r} tie=true needs a token encoder with the same vocabulary; set head.tie=false"
                )
            head.fc.weight = emb.weight
        return head

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    def forward(self, x: Any, mask: torch.Tensor | None = None, return_hidden: bool = False):
        tokens, mask = self.encoder(x, mask)
        tokens, mask, hidden = self.encode(tokens, mask)
        out = self.encoder.postprocess(self.head(tokens, mask, hidden))
        return (out, hidden) if return_hidden else out

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        """Encoder tokens -> the layer schedule (with transitions) -> final norm; returns the
        tokens, their mask (transitions may shorten it) and every layer's output."""
        if self.position.applies_to == "input":
            tokens = self.position(tokens)
        tokens = self.input_drop(tokens)
        hidden: list[torch.Tensor] = []
        for layer, b in enumerate(self.layer_blocks):
            if layer not in self.dropped:
                tokens = self.blocks[b](tokens, mask, **self.layer_options.get(layer, {}))
            hidden.append(tokens)
            if layer < len(self.transitions):
                tokens, mask = self.transitions[layer](tokens, mask)
        if self.final_norm is not None:
            tokens = self.final_norm(tokens, mask)
        return tokens, mask, hidden

    def parameter_report(self) -> dict[str, int]:
        """Parameters per part (tied or shared tensors counted once, where first met)."""
        seen: set[int] = set()

        def count(module: nn.Module | None) -> int:
            if module is None:
                return 0
            total = 0
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
            return total

        report = {"encoder": count(self.encoder), "position": count(self.position)}
        for i, block in enumerate(self.blocks):
            report[f"block {i} mixer"] = count(block.mixer)
            report[f"block {i} ffn"] = sum(count(s.fn) for s in block.sublayers if s.fn is not block.mixer)
            report[f"block {i} norms"] = count(block)
        report["transitions"] = count(self.transitions)
        report["final norm"] = count(self.final_norm)
        report["head"] = count(self.head)
        report["total"] = sum(p.numel() for p in self.parameters())  # parameters() dedups shared ones
        return report
