"""What OT fusion aligns in a model ("Transformer Fusion with Optimal Transport", Imfeld et
al. 2024): its channel spaces and, for every state-dict tensor, which axis lies in which.

Spaces: `residual` (the D channels of the residual stream, one space along the whole path:
encoder, positions, every block's norms and sublayer outputs, the final norm, the head);
per distinct block b, `b.qk` (query and key dims, H * Dh: one map, so q k^T is kept) and
`b.vo` (value dims and o_proj's columns), which share the head structure, and `b.PATH.hidden`
(an ffn's hidden units). Each axis is `out` (the tensor writes those channels: rows, biases,
gains) or `in` (reads them: columns), which fixes how a non-square map moves it
(transport.move).

What can be aligned is declared by the components, never guessed from names or types:
`residual_axes` (norms, encoders, positions, heads: every parameter -> its residual axis or
None), `fusable_heads` with `attention_projections` (mixers), `hidden_linears()` (ffns).
Anything else holding weights is refused in one line (a ConfigError naming it)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from anyformer import registry
from anyformer.errors import ConfigError

RESIDUAL = "residual"


@dataclass(frozen=True)
class Axis:
    """One tensor axis in a channel space, written ('out') or read ('in') by the tensor."""

    space: str
    side: str


@dataclass
class Layout:
    """A model's channel spaces. `axes`: state-dict key -> {tensor axis: Axis} (a key absent
    from it does not depend on any channel order: averaged as it is); `sizes`: space ->
    channels; `groups`: block -> (q-k space, v-o space, heads, head_dim); `probes`: space ->
    (module, 'output' | 'input') whose activations [..., channels] are that space's;
    `aliases`: a tied tensor's other state-dict keys -> its first key."""

    axes: dict[str, dict[int, Axis]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    groups: dict[int, tuple[str, str, int, int]] = field(default_factory=dict)
    probes: dict[str, list[tuple[nn.Module, str]]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    stack: nn.Module | None = None

    def spaces(self) -> list[str]:
        return list(self.sizes)


def _name(module: nn.Module) -> str:
    return getattr(module, "registry_name", type(module).__name__)


def declared(cls: type, attribute: str) -> object:
    """A capability as `cls` declares it itself (None when only inherited): a subclass
    that adds weights or changes the math must not inherit its parent's declaration.
    Methods (`hidden_linears`) are inherited: the completeness check guards those."""
    if attribute == "hidden_linears":
        return getattr(cls, attribute, None)
    return vars(cls).get(attribute)


def supporting(kind: str, attribute: str) -> str:
    """Registered components of `kind` declaring `attribute`, for error messages."""
    names = []
    for n in registry.list_components(kind):
        value = declared(registry.get(kind, n), attribute)
        if value is True or isinstance(value, dict) or callable(value):
            names.append(n)
    return ", ".join(names) or "none"


class _Builder:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.names = {id(m): n for n, m in model.named_modules()}
        self.state = model.state_dict(keep_vars=True)
        self.layout = Layout()
        self.owned: set[str] = set()

    def key(self, module: nn.Module, local: str) -> str:
        prefix = self.names[id(module)]
        return f"{prefix}.{local}" if prefix else local

    def own(self, key: str, axes: dict[int, Axis] | None = None) -> None:
        self.owned.add(key)
        if axes:
            self.layout.axes[key] = axes

    def own_linear(self, linear: nn.Linear, out_space: str, in_space: str) -> None:
        """A linear layer's weight [out, in] and bias [out], their axes in those spaces."""
        self.own(self.key(linear, "weight"), {0: Axis(out_space, "out"), 1: Axis(in_space, "in")})
        if linear.bias is not None:
            self.own(self.key(linear, "bias"), {0: Axis(out_space, "out")})

    def residual_part(self, module: nn.Module | None, what: str, side: str) -> None:
        """A module declaring `residual_axes`: each of its tensors on the residual space."""
        if module is None:
            return
        axes = declared(type(module), "residual_axes")
        kind = what.split()[0]
        if axes is None:
            raise ConfigError(f"fuse: {what} {_name(module)!r} does not declare how its weights follow the residual channels "
                              f"(residual_axes); {kind}s fuse can align: {supporting(kind, 'residual_axes')}")
        for local in module.state_dict(keep_vars=True):
            if local not in axes:
                raise ConfigError(f"fuse: {what} {_name(module)!r} holds {local!r}, which fuse cannot align (not in its residual_axes); "
                                  f"use the {kind} without that option, or one of: {supporting(kind, 'residual_axes')}")
            axis = axes[local]
            self.own(self.key(module, local), {axis: Axis(RESIDUAL, side)} if axis is not None else None)

    def mixer(self, b: int, mixer: nn.Module, layers: list[int]) -> None:
        where = f"mixer {_name(mixer)!r} (layers {layers})"
        if declared(type(mixer), "fusable_heads") is not True:
            raise ConfigError(f"fuse: {where} has no q/k/v/o heads fuse can align; mixers it can: {supporting('mixer', 'fusable_heads')}")
        if mixer.kv_heads != mixer.heads:
            raise ConfigError(f"fuse: {where} uses grouped-query attention (kv_heads {mixer.kv_heads} < heads {mixer.heads}); "
                              "fusion aligns multi-head attention only (kv_heads == heads)")
        if mixer.position is not None:
            raise ConfigError(f"fuse: {where} applies {_name(mixer.position)!r} positions inside attention, which fix the order of "
                              "heads or of dims within a head; fuse models with position 'learned' or 'none'")
        qk, vo = f"{b}.qk", f"{b}.vo"
        q, k, v, o = (getattr(mixer, n) for n in mixer.attention_projections)
        width = mixer.heads * mixer.head_dim
        for linear, space in ((q, qk), (k, qk), (v, vo)):
            self.own_linear(linear, space, RESIDUAL)
        self.own_linear(o, RESIDUAL, vo)
        self.complete(mixer, where, f"mixers fuse can align: {supporting('mixer', 'fusable_heads')}")
        self.layout.sizes[qk] = self.layout.sizes[vo] = width
        self.layout.groups[b] = (qk, vo, mixer.heads, mixer.head_dim)
        self.layout.probes[qk] = [(q, "output"), (k, "output")]
        self.layout.probes[vo] = [(v, "output")]

    def ffn(self, b: int, path: str, ffn: nn.Module, layers: list[int]) -> None:
        where = f"ffn {_name(ffn)!r} (layers {layers})"
        linears = getattr(ffn, "hidden_linears", None)
        if not callable(linears):
            raise ConfigError(f"fuse: {where} has no hidden units fuse can align (hidden_linears); ffns it can: {supporting('ffn', 'hidden_linears')}")
        ins, out = linears()
        space = f"{b}.{path}.hidden"
        for linear in ins:
            self.own_linear(linear, space, RESIDUAL)
        self.own_linear(out, RESIDUAL, space)
        self.complete(ffn, where, f"ffns fuse can align: {supporting('ffn', 'hidden_linears')}")
        self.layout.sizes[space] = out.in_features
        self.layout.probes[space] = [(out, "input")]

    def complete(self, module: nn.Module, where: str, fix: str) -> None:
        for local in module.state_dict(keep_vars=True):
            if self.key(module, local) not in self.owned:
                raise ConfigError(f"fuse: {where} holds {local!r} outside the weights fuse aligns; {fix}")

    def blocks(self, stack: nn.Module) -> None:
        for b, block in enumerate(stack.blocks):
            layers = stack.layers_of(b)
            for path in block.path_names:
                sub = block.path(path)
                if sub.absent:
                    continue
                if path == "mixer":
                    self.mixer(b, sub.fn, layers)
                else:
                    self.ffn(b, path, sub.fn, layers)
            for role, norm in block.norms().items():
                self.residual_part(norm, f"norm ({role}, layers {layers})", "out")
            for local, tensor in block.state_dict(keep_vars=True).items():
                key = self.key(block, local)
                if key not in self.owned and tensor.dim() == 0:  # a residual branch's scale (path_scale)
                    self.own(key)


def layout(model: nn.Module) -> Layout:
    """The channel spaces of `model` (encoder -> positions -> layer stack -> final norm ->
    head), or a one-line ConfigError naming the first part fuse cannot align."""
    stack = getattr(model, "stack", None)
    missing = [n for n in ("encoder", "position", "head") if getattr(model, n, None) is None]
    if stack is None or not hasattr(stack, "layers_of") or missing:
        raise ConfigError(f"fuse aligns models of encoder -> layer stack -> head (arch 'stack'); {type(model).__name__} has no "
                          f"{'stack' if stack is None else missing[0]}")
    if len(stack.transitions):
        raise ConfigError("fuse: the model has transitions between layers (model.schedule.transition), which fuse cannot align; "
                          "fuse models without them")
    if stack.dropped or any(stack.skip.values()):
        raise ConfigError("fuse: the model drops layers or prunes paths (model.schedule.drop / prune), whose weights no calibration "
                          "batch reaches; fuse the full runs, then drop (anyformer compress --method drop)")
    build = _Builder(model)
    build.layout.stack = stack
    build.layout.sizes[RESIDUAL] = int(model.config.dim)
    build.residual_part(model.encoder, "encoder", "out")
    build.residual_part(model.position, "position", "out")
    build.blocks(stack)
    build.residual_part(getattr(model, "final_norm", None), "norm (final)", "out")
    build.residual_part(model.head, "head", "in")
    first: dict[int, str] = {}
    for key, tensor in build.state.items():
        if key not in build.owned:
            raise ConfigError(f"fuse: {key!r} belongs to no part fuse can align (encoder, position, blocks of attention and ffn, "
                              "norms, head); fuse models made of those parts only")
        if isinstance(tensor, torch.Tensor):
            if id(tensor) in first:  # a tied tensor (the LM head's weight is the embedding's) moves once
                build.layout.aliases[key] = first[id(tensor)]
            else:
                first[id(tensor)] = key
    return build.layout
