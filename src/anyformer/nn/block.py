"""One layer: a token mixer and a channel mixer, wired by norm placement and layout.

placement: `pre` x + f(norm(x)); `post` norm(x + f(x)); `peri` x + norm_out(f(norm_in(x)))
(Peri-LN, Kim et al. 2025). layout: `sequential` mixer then ffn; `parallel` both read the
same input and their outputs add (GPT-J); `macaron` half-step ffn, mixer, half-step ffn
(Lu et al. 2019).

Every norm has a role name ('mixer.norm_in', 'ffn.norm_out', 'ffn2.norm_in', 'parallel'):
the norm factory is called with it and `Block.norms()` returns {role: norm}, so code that
rebuilds a block's norms (MoT's per-modality norms) finds them by role, not by position.

Per-path options: `path_scale` adds EnsembleScale, a learned scalar on each residual branch
("Revisiting Vision Transformer from the View of Path Ensemble", Chang et al. 2023);
`forward(..., drop_path=p)` drops each branch per sample with rate p in training
(stochastic depth, Huang et al. 2016, as in DeiT); `skip` prunes branches by name.

`make_block(spec, ctx)` builds one block from a layer's specs and the model's context, with
the checks every layer needs (positions attached inside mixers, padding-mask support)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from anyformer import registry
from anyformer.config import ComponentSpec
from anyformer.errors import ConfigError, unknown
from anyformer.nn.mixers.base import mixers_supporting

PLACEMENTS = ("pre", "post", "peri")
LAYOUTS = ("sequential", "parallel", "macaron")

NormFn = Callable[[str], nn.Module]  # role name -> a fresh norm
Grid = tuple[int, int] | None


def drop_branch(h: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: in training, zero a residual branch h [B, ...] per sample with
    probability `rate` and scale the kept ones by 1 / (1 - rate); identity otherwise."""
    if rate <= 0.0 or not training:
        return h
    keep = torch.rand(h.shape[0], *([1] * (h.dim() - 1)), device=h.device) >= rate
    return h * keep.to(h.dtype) / (1.0 - rate)


class Sublayer(nn.Module):
    """The residual branch `name` ('mixer', 'ffn', 'ffn2'): f with its norms; `scale` weights
    its output (0.5 in Macaron). placement 'bare' has no norms (the block normalises around
    it). x: [B, L, D], mask Bool[B, L] (passed to f only when `takes_mask`) -> [B, L, D]."""

    def __init__(self, name: str, fn: nn.Module, make_norm: NormFn, placement: str,
                 dropout: float = 0.0, scale: float = 1.0, path_scale: bool = False,
                 takes_mask: bool = False) -> None:
        super().__init__()
        self.name, self.fn, self.placement, self.scale, self.takes_mask = name, fn, placement, scale, takes_mask
        self.depth_aware = bool(getattr(fn, "depth_aware", False))
        # An absent branch (ffn 'none') is skipped outright: no norms, the input passes through.
        present = not self.absent
        self.path_scale = nn.Parameter(torch.ones(())) if path_scale and present else None
        self.norm_in = make_norm(f"{name}.norm_in") if placement in ("pre", "peri") and present else None
        self.norm_out = make_norm(f"{name}.norm_out") if placement in ("post", "peri") and present else None
        self.drop = nn.Dropout(dropout)

    @property
    def absent(self) -> bool:
        return bool(getattr(self.fn, "absent", False))

    def norms(self) -> dict[str, nn.Module]:
        """{role: norm} of this branch ('NAME.norm_in', 'NAME.norm_out')."""
        return {f"{self.name}.{key}": m for key, m in (("norm_in", self.norm_in), ("norm_out", self.norm_out)) if m is not None}

    def branch(self, x: torch.Tensor, mask: torch.Tensor | None, drop_path: float = 0.0,
               layer: int | None = None) -> torch.Tensor:
        """The residual increment f(...) before a post-norm (pre and peri are complete);
        `layer` reaches f only when it is depth-aware."""
        if self.absent:
            return torch.zeros_like(x)
        h = self.norm_in(x, mask) if self.norm_in is not None else x
        call = {"layer": layer} if self.depth_aware and layer is not None else {}
        h = self.fn(h, mask, **call) if self.takes_mask else self.fn(h, **call)
        if self.placement == "peri":
            h = self.norm_out(h, mask)
        h = self.drop(h)
        if self.scale != 1.0:  # skip a full-size multiply on every ordinary branch
            h = self.scale * h
        if self.path_scale is not None:
            h = self.path_scale.to(h.dtype) * h
        return drop_branch(h, drop_path, self.training)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, drop_path: float = 0.0,
                skip: bool = False, layer: int | None = None) -> torch.Tensor:
        if self.absent:
            return x
        out = x if skip else x + self.branch(x, mask, drop_path, layer)
        if self.placement == "post":
            out = self.norm_out(out, mask)
        return out


class Block(nn.Module):
    """mixer + ffn (+ a second ffn for macaron). x: [B, L, D], mask Bool[B, L] -> [B, L, D].
    `make_norm(role)` makes each norm; roles are listed by `norms()`."""

    def __init__(self, mixer: nn.Module, ffn: nn.Module, make_norm: NormFn,
                 placement: str = "pre", layout: str = "sequential", dropout: float = 0.0,
                 ffn2: nn.Module | None = None, path_scale: bool = False) -> None:
        super().__init__()
        if placement not in PLACEMENTS:
            raise unknown("norm placement", placement, PLACEMENTS)
        if layout not in LAYOUTS:
            raise unknown("layout", layout, LAYOUTS)
        self.placement, self.layout = placement, layout
        half = 0.5 if layout == "macaron" else 1.0
        # Parallel post-norm normalises the summed residual once, so its branches are bare.
        sub_place = "bare" if layout == "parallel" and placement == "post" else placement
        subs = [Sublayer("mixer", mixer, make_norm, sub_place, dropout, path_scale=path_scale, takes_mask=True),
                Sublayer("ffn", ffn, make_norm, sub_place, dropout, half, path_scale)]
        if layout == "macaron":
            if ffn2 is None:
                raise ValueError("macaron layout needs a second ffn")
            subs.insert(0, Sublayer("ffn2", ffn2, make_norm, placement, dropout, half, path_scale))
        self.sublayers = nn.ModuleList(subs)
        self.parallel_norm = make_norm("parallel") if layout == "parallel" and placement == "post" else None

    @property
    def path_names(self) -> tuple[str, ...]:
        """Names of the residual branches, in order ('ffn2' is macaron's first half-step ffn)."""
        return tuple(sub.name for sub in self.sublayers)

    def path(self, name: str) -> Sublayer:
        """The residual branch called `name` (one of `path_names`)."""
        for sub in self.sublayers:
            if sub.name == name:
                return sub
        raise unknown("block path", name, self.path_names)

    def part(self, name: str) -> nn.Module:
        """The function of branch `name`: the mixer, the ffn or macaron's ffn2."""
        return self.path(name).fn

    @property
    def mixer(self) -> nn.Module:
        return self.path("mixer").fn

    @property
    def ffn(self) -> nn.Module:
        return self.path("ffn").fn

    def replace(self, name: str, module: nn.Module) -> None:
        """Put `module` in place of branch `name`'s function; norms and scales stay."""
        sub = self.path(name)
        if sub.absent and not getattr(module, "absent", False):
            raise ConfigError(f"block path {name!r} was built absent (ffn 'none') and has no norms; build the model with a real {name} instead")
        sub.fn = module

    @property
    def depth_aware(self) -> bool:
        """True when a branch acts differently by layer: the stack then passes `layer=`."""
        return any(sub.depth_aware for sub in self.sublayers)

    def norms(self) -> dict[str, nn.Module]:
        """{role: norm} of every norm of the block, e.g. 'mixer.norm_in', 'ffn.norm_out', 'parallel'."""
        found = {role: m for sub in self.sublayers for role, m in sub.norms().items()}
        if self.parallel_norm is not None:
            found["parallel"] = self.parallel_norm
        return found

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, drop_path: float = 0.0,
                skip: frozenset[str] = frozenset(), layer: int | None = None) -> torch.Tensor:
        """`drop_path`: stochastic-depth rate of every branch (training only); `skip`: names
        of branches pruned (see `path_names`); `layer`: the index of the layer this call
        runs, for depth-aware branches (None: the one each was built for)."""
        if self.layout != "parallel":
            for sub in self.sublayers:
                x = sub(x, mask, drop_path, sub.name in skip, layer)
            return x
        out = x + sum(sub.branch(x, mask, drop_path, layer) for sub in self.sublayers if sub.name not in skip)
        return self.parallel_norm(out, mask) if self.parallel_norm is not None else out


# ---------------------------------------------------------------- building one layer

@dataclass(frozen=True)
class LayerSpec:
    """What differs between layers: index, mixer/ffn specs, the longest input and its grid."""

    layer: int
    mixer: ComponentSpec
    ffn: ComponentSpec
    length: int
    grid: Grid = None


@dataclass(frozen=True)
class BlockContext:
    """What every layer of a model is built with. `position` (rotary / ALiBi) is attached to
    each mixer when it acts inside attention; `may_pad` (the encoder can pad) requires
    mixers that honour a padding mask; `source` names the encoder in that error."""

    dim: int
    heads: int
    norm_fn: NormFn
    causal: bool = False
    placement: str = "pre"
    layout: str = "sequential"
    dropout: float = 0.0
    path_scale: bool = False
    position: nn.Module | None = None
    may_pad: bool = False
    source: str = "the encoder"


def _context(spec: LayerSpec, ctx: BlockContext) -> dict:
    # `layer` reaches only components that take it (depth-aware mixers).
    return dict(dim=ctx.dim, heads=ctx.heads, max_len=spec.length, num_tokens=spec.length,
                grid=spec.grid, causal=ctx.causal, layer=spec.layer)


def make_mixer(spec: LayerSpec, ctx: BlockContext) -> nn.Module:
    """The layer's token mixer, with positions attached and its padding-mask support checked."""
    mixer = registry.build("mixer", spec.mixer.name, **_context(spec, ctx), **spec.mixer.options)
    if ctx.position is not None and ctx.position.applies_to in ("qk", "bias"):
        mixer.set_position(ctx.position)
    if ctx.may_pad and not getattr(mixer, "supports_mask", True):
        raise ConfigError(
            f"mixer {spec.mixer.name!r} cannot honour the padding mask of {ctx.source}; "
            f"drop pad_id or use one of: {mixers_supporting('supports_mask')}"
        )
    return mixer


def make_ffn(spec: LayerSpec, ctx: BlockContext) -> nn.Module:
    """The layer's channel mixer."""
    return registry.build("ffn", spec.ffn.name, **_context(spec, ctx), **spec.ffn.options)


def make_block(spec: LayerSpec, ctx: BlockContext,
               wire: Callable[[nn.Module, nn.Module], nn.Module] | None = None) -> nn.Module:
    """One layer for inputs of up to `spec.length` tokens: a Block with the context's norms,
    placement and layout, or `wire(mixer, ffn)`, an arch's own layer around the same
    checked parts (FEDformer's decomposition layer)."""
    mixer = make_mixer(spec, ctx)
    ffn = make_ffn(spec, ctx)
    if wire is not None:
        return wire(mixer, ffn)
    ffn2 = make_ffn(spec, ctx) if ctx.layout == "macaron" else None
    return Block(mixer, ffn, ctx.norm_fn, ctx.placement, ctx.layout, ctx.dropout, ffn2, ctx.path_scale)
