"""AnyFormer: encoder -> layer stack -> final norm -> head, built from a ModelConfig.

The part builders here (`build_encoder`, `build_position`, `block_context`, `build_head`,
...) are what every arch assembles itself from; an arch passes its variation in as
callables (`block_fn`, `head_fn`) rather than overriding methods."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import torch
from torch import nn

from anyformer import registry
from anyformer.config import ComponentSpec, ModelConfig
from anyformer.errors import ConfigError
from anyformer.nn import generation
from anyformer.nn.block import BlockContext, NormFn, make_block
from anyformer.nn.decoding import DecodeState
from anyformer.nn.ensemble import self_ensembled
from anyformer.nn.footprint import check_build
from anyformer.nn.stack import BlockFn, LayerStack, parameter_counter
from anyformer.nn.token_filter import TokenFilter, check_parts

HeadFn = Callable[[ModelConfig, nn.Module, int], nn.Module]


def _build(kind: str, spec: ComponentSpec, **context: Any) -> nn.Module:
    return registry.build(kind, spec.name, **context, **spec.options)


def require_parts(config: ModelConfig) -> None:
    """What every arch checks before it builds anything: an encoder and a head must be named
    (a task fills them in when unset), and the model must fit in the memory free (counted
    on the meta device first, so an absurd size is refused before it is allocated)."""
    if config.encoder is None or config.head is None:
        missing = "encoder" if config.encoder is None else "head"
        raise ConfigError(f"model.{missing} is not set; name one (see `anyformer list {missing}`) or train on a task, which supplies it")
    check_build(config)


def refuse_mixer(config: ModelConfig, arch: str) -> None:
    """For an arch that builds its own attention or message passing (it declares
    `builds_own_mixer = True`): a model.mixer other than the default would be silently
    ignored, so it is refused."""
    if config.mixer.name != "softmax" or config.mixer.options:
        raise ConfigError(f"arch {arch!r} builds its own token mixing, so model.mixer {config.mixer.name!r} cannot apply; "
                          "drop model.mixer (or build the model with arch 'stack')")


def refuse_schedule(config: ModelConfig, arch: str) -> None:
    """For an arch that builds its own layers: the layer schedule's sharing, repeats,
    overrides and transitions act on the standard stack only, so they are refused."""
    s = config.schedule
    if s.share or s.transition is not None or s.overrides or s.repeat > 1:
        raise ConfigError(f"arch {arch!r} builds its own layers; model.schedule.share/repeat/overrides/transition are not supported")


def build_encoder(config: ModelConfig) -> nn.Module:
    return _build("encoder", config.encoder, dim=config.dim, max_len=config.max_len)


def build_position(config: ModelConfig, num_tokens: int) -> nn.Module:
    return _build("position", config.position, dim=config.dim, heads=config.heads, num_tokens=num_tokens)


def norm_fn(config: ModelConfig) -> NormFn:
    """role -> a fresh norm of the configured kind (every role gets the same kind)."""
    return lambda role: _build("norm", config.norm, dim=config.dim)


def block_context(config: ModelConfig, encoder: nn.Module, position: nn.Module | None) -> BlockContext:
    """What every layer is built with: widths, norms, placement, layout, the position module
    acting inside mixers, and whether the encoder may pad (mixers must honour the mask)."""
    return BlockContext(
        dim=config.dim, heads=config.heads, norm_fn=norm_fn(config), causal=config.causal,
        placement=config.norm.placement, layout=config.layout, dropout=config.dropout,
        path_scale=config.path_scale, position=position, may_pad=bool(encoder.may_pad),
        source=f"encoder {config.encoder.name!r}",
    )


def build_head(config: ModelConfig, encoder: nn.Module, num_tokens: int) -> nn.Module:
    """The configured head, with defaults the encoder hints at (vocab, channels, ...)."""
    head_cls = registry.get("head", config.head.name)
    accepted = registry.option_names(head_cls)
    hints = {k: v for k, v in encoder.head_hints().items() if k not in config.head.options and k in accepted}
    tied = "tie" in accepted and config.head.options.get("tie", registry.options_schema(head_cls).model_fields["tie"].default)
    clash = [k for k, v in encoder.head_hints().items() if config.head.options.get(k, v) != v]
    if tied and (getattr(encoder, "embedding", None) is None or clash):
        # Refused before the head is built: an untieable vocab_size of 1e12 was allocated first.
        raise ConfigError(
            f"head {config.head.name!r} tie=true needs a token encoder with the same vocabulary; set head.tie=false"
        )
    head = _build("head", config.head, dim=config.dim, num_tokens=num_tokens, **hints)
    # Every arch gives one hidden state per layer of model.depth (FIT: per FIT block).
    check = getattr(head, "check_hidden_states", None)
    if check is not None:
        check(config.depth)
    if getattr(head, "tie", False):
        emb = getattr(encoder, "embedding", None)
        if emb is None or emb.weight.shape != head.fc.weight.shape:
            raise ConfigError(
                f"head {config.head.name!r} tie=true needs a token encoder with the same vocabulary; set head.tie=false"
            )
        head.fc.weight = emb.weight
    return head


def build_token_filter(config: ModelConfig, encoder: nn.Module, position: nn.Module, stack: LayerStack,
                       head: nn.Module) -> TokenFilter | None:
    """The configured token filter (None when there is none), after checking that every
    part it feeds can take a subset of the tokens (nn/token_filter.py)."""
    spec = config.token_filter
    if spec is None:
        return None
    prefix = int(encoder.num_prefix_tokens)
    check_parts(position, [b.part("mixer") for b in stack.blocks], stack.transitions, head, prefix, spec.threshold is not None)
    return TokenFilter(config.dim, spec.keep, spec.threshold, spec.hidden, prefix)


def parameter_report(model: nn.Module, position: nn.Module | None, transitions: nn.Module | None) -> dict[str, int]:
    """Parameters per part of an assembled model (encoder, position, stack, final_norm,
    head attributes), tied or shared tensors counted once, where first met."""
    count = parameter_counter()
    report = {"encoder": count(model.encoder), "position": count(position)}
    report.update(model.stack.parameter_report(count))
    report["transitions"] = count(transitions)
    report["final norm"] = count(model.final_norm)
    report["head"] = count(model.head)
    if getattr(model, "token_filter", None) is not None:
        report["token filter"] = count(model.token_filter)
    report["total"] = sum(p.numel() for p in model.parameters())  # parameters() dedups shared ones
    return report


def read_out(model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor | None,
             hidden: list[torch.Tensor], return_hidden: bool) -> Any:
    """The last layer's tokens [B, L, D] -> final norm -> head -> the encoder's postprocess
    (and the hidden states when `return_hidden`)."""
    if model.final_norm is not None:
        tokens = model.final_norm(tokens, mask)
    out = model.encoder.postprocess(model.head(tokens, mask, hidden))
    return (out, hidden) if return_hidden else out


def _rename_keys(state_dict: dict[str, torch.Tensor], prefix: str, *args: Any,
                 renames: tuple[tuple[str, str | None], ...]) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        for old, new in renames:
            if rest.startswith(old):
                value = state_dict.pop(key)
                if new is not None:  # None: an alias the model no longer registers
                    state_dict[prefix + new + rest[len(old):]] = value
                break


def accept_old_keys(module: nn.Module, renames: dict[str, str | None]) -> None:
    """Let `module.load_state_dict` read weights saved before a rename: keys starting with an
    old prefix get the new one (None drops them). Prefixes should end with '.'."""
    module._register_load_state_dict_pre_hook(partial(_rename_keys, renames=tuple(renames.items())))


# Before the layer stack was one part, its blocks and transitions sat on the model itself.
STACK_RENAMES = {"blocks.": "stack.blocks.", "transitions.": "stack.transitions."}


@registry.register("arch", "stack")
class AnyFormer(nn.Module):
    """Encoder -> layer stack (with optional transitions between layers) -> final norm ->
    head. forward(x, mask=None, return_hidden=False) -> output (and every layer's hidden
    state [B, L, D] when `return_hidden`). Variants pass `block_fn(spec, ctx)` (how one
    layer is built, default `make_block`) and `head_fn(config, encoder, num_tokens)`.
    In eval mode, when a layer declares a self-ensemble (SSA's `eval_samples`), the output
    is the mean over that many whole sub-models (nn/ensemble.py); hidden states are the
    first sub-model's."""

    paper = "Attention Is All You Need (Vaswani et al. 2017)"
    # model.token_filter is applied in encode(); an arch that assembles itself otherwise says False.
    supports_token_filter: ClassVar[bool] = True
    # Set by nn/decoding.decoding() while generating: the tokens the caches already hold.
    decode_state: DecodeState | None = None

    def __init__(self, config: ModelConfig, block_fn: BlockFn = make_block, head_fn: HeadFn = build_head) -> None:
        super().__init__()
        require_parts(config)
        self.config = c = config
        self.encoder = build_encoder(c)
        self.position = build_position(c, self.encoder.num_tokens)
        self.input_drop = nn.Dropout(c.dropout)
        ctx = block_context(c, self.encoder, self.position)
        self.stack = LayerStack(c, ctx, self.encoder.num_tokens, self.encoder.grid, block_fn)
        mixers = [b.part("mixer") for b in self.stack.blocks]
        if self.encoder.num_prefix_tokens and c.head.name == "cls" and not any(getattr(m, "mixes_tokens", True) for m in mixers):
            raise ConfigError(
                f"no layer's mixer mixes tokens ({getattr(mixers[0], 'registry_name', c.mixer.name)!r} acts on each token alone), so the [CLS] token "
                "the 'cls' head reads never sees the input; use head 'mean' with cls_token false (preset vit-gap)"
            )
        self.final_norm = norm_fn(c)("final") if c.final_norm else None
        self.head = head_fn(c, self.encoder, self.stack.out_length)
        # Registered last (when configured), so the other parameters keep their order.
        self.token_filter = build_token_filter(c, self.encoder, self.position, self.stack, self.head)
        accept_old_keys(self, STACK_RENAMES)

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    @self_ensembled
    def forward(self, x: Any, mask: torch.Tensor | None = None, return_hidden: bool = False):
        tokens, mask = self.encoder(x, mask)
        tokens, mask, hidden = self.encode(tokens, mask)
        out = self.encoder.postprocess(self.head(tokens, mask, hidden))
        return (out, hidden) if return_hidden else out

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        """Encoder tokens [B, L, D] -> positions -> the token filter -> the stack -> final
        norm; returns the tokens, their mask (the filter and transitions may shorten both)
        and every layer's output."""
        if self.position.applies_to == "input":
            tokens = self.position(tokens, self.decode_state.offset if self.decode_state is not None else 0)
        if self.token_filter is not None:  # in training too: a fine-tune learns on the tokens inference keeps
            tokens, mask = self.token_filter(tokens, mask)
        tokens, mask, hidden = self.stack(self.input_drop(tokens), mask)
        if self.final_norm is not None:
            tokens = self.final_norm(tokens, mask)
        return tokens, mask, hidden

    def parameter_report(self) -> dict[str, int]:
        """Parameters per part (tied or shared tensors counted once, where first met)."""
        return parameter_report(self, self.position, self.stack.transitions)

    @torch.no_grad()
    def generate(self, prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 cache: bool = True) -> torch.Tensor:
        """Continue `prompt_ids` [B, L] by `max_new_tokens` sampled tokens -> [B, L + new]
        (temperature 0: greedy). Incremental, with each mixer's cache, where every mixer can
        decode so; else by recomputing the whole sequence each step (nn/generation.py)."""
        return generation.generate(self, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, cache)
