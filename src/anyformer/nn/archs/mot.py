"""Mixture-of-Transformers: modality-specific weights, global self-attention."""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from anyformer.config import ModelConfig
from anyformer.errors import ConfigError, ShapeError
from anyformer.nn.block import Block, BlockContext, LayerSpec, make_block
from anyformer.nn.model import AnyFormer
from anyformer.nn.ranges import Count, NonNegativeInt
from anyformer.registry import register

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


class ModalityContext:
    """The modality ids of the current forward, shared by the routed modules of one model
    (set by MixtureOfTransformers.forward). Ids given without the encoder's prefix tokens
    get `prefix` ids of modality `prefix_modality` in front once the token count is known.
    A plain object, not a module: each routed module holds a reference to the one context."""

    def __init__(self) -> None:
        self.ids: torch.Tensor | None = None
        self.prefix, self.prefix_modality = 0, 0

    def __deepcopy__(self, memo: dict) -> "ModalityContext":
        # A copied block (LayerStack.replace un-sharing one) must keep reading its model's
        # ids; a copied model shares the context too, harmlessly: each forward sets the
        # ids and clears them when it returns.
        return self

    def ids_for(self, shape: torch.Size) -> torch.Tensor | None:
        ids = self.ids
        if ids is not None and ids.shape[1] + self.prefix == shape[1] and self.prefix:
            ids = torch.cat([ids.new_full((ids.shape[0], self.prefix), self.prefix_modality), ids], 1)
            self.ids, self.prefix = ids, 0
        return ids


class ModalityRouted(nn.Module):
    """One module per modality; token t goes through module ids[t]. Used for linear
    projections and ffns (forward(x)) and for norms (forward(x, mask)). [B, L, *] -> [B, L, *]."""

    def __init__(self, experts: list[nn.Module], context: ModalityContext, is_norm: bool = False) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)
        self.is_norm = is_norm
        self.context = context
        # Routing absent ffns ('none') is still absent: the block skips the branch.
        self.absent = bool(getattr(experts[0], "absent", False))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        ids = self.context.ids_for(x.shape[:-1])
        if ids is None:  # no ids given: every token is modality 0
            return self.experts[0](x, mask) if self.is_norm else self.experts[0](x)
        if x.shape[:-1] != ids.shape:
            raise ShapeError(f"arch 'mot': a modality-specific layer got tokens {list(x.shape)} but modality ids {None if ids is None else list(ids.shape)}; "
                             "use a mixer that projects the full sequence (e.g. softmax, linear, local)")
        out: torch.Tensor | None = None
        for m, expert in enumerate(self.experts):
            sel = ids == m
            if not bool(sel.any()):
                continue
            if self.is_norm:
                y = expert(x[sel][None], None if mask is None else mask[sel][None])[0]
            else:
                y = expert(x[sel])
            if out is None:
                out = x.new_zeros(*x.shape[:-1], y.shape[-1])
            out = out.index_put((sel,), y)
        return out


def modality_block(spec: LayerSpec, ctx: BlockContext, modalities: int, context: ModalityContext) -> Block:
    """MoT's `block_fn`: one dense block per modality (built, and checked, as any layer),
    merged into one block whose attention projections, ffns and norms route each token to
    its modality's copy; the attention itself (the first copy's) runs over all tokens."""
    copies = [make_block(spec, ctx) for _ in range(modalities)]
    mixer = copies[0].mixer
    if tuple(mixer.attention_projections) != PROJECTIONS:
        raise ConfigError(f"arch 'mot' needs an attention mixer with q/k/v/o projections, got {spec.mixer.name!r}")
    for proj in PROJECTIONS:
        setattr(mixer, proj, ModalityRouted([getattr(b.mixer, proj) for b in copies], context))
    ffns = {name: ModalityRouted([b.part(name) for b in copies], context) for name in copies[0].path_names if name != "mixer"}
    norms = [b.norms() for b in copies]  # {role: norm} per modality

    def routed_norm(role: str) -> nn.Module:
        return ModalityRouted([n[role] for n in norms], context, is_norm=True)

    return Block(mixer, ffns["ffn"], routed_norm, ctx.placement, ctx.layout, ctx.dropout, ffns.get("ffn2"), ctx.path_scale)


@register("arch", "mot")
class MixtureOfTransformers(AnyFormer):
    """Mixture-of-Transformers (Liang et al. 2024): every non-embedding weight of a layer is
    per modality (the ffn, the attention's q/k/v/o projections, the norms) while
    self-attention runs globally over the whole mixed sequence. forward(x, mask=None,
    modality_ids=Long[B, L] in 0..modalities-1) -> output; ids may omit the encoder's
    prefix tokens, which then take `prefix_modality`; without ids every token is modality 0. The final norm and head are shared."""

    paper = "Mixture-of-Transformers: A Sparse and Scalable Architecture for Multi-Modal Foundation Models (Liang et al. 2024)"
    # Tokens are routed to modalities by their position: no token filter (model.token_filter).
    supports_token_filter = False

    def __init__(self, config: ModelConfig, modalities: Count = 2, prefix_modality: NonNegativeInt = 0) -> None:
        if not 0 <= prefix_modality < modalities:
            raise ConfigError(f"arch 'mot': prefix_modality {prefix_modality} outside the valid range 0..{modalities - 1}")
        if config.schedule.transition is not None:
            raise ConfigError("arch 'mot' keeps one modality id per token and cannot take model.schedule.transition")
        context = ModalityContext()
        super().__init__(config, block_fn=partial(modality_block, modalities=modalities, context=context))
        self.context = context
        self.modalities, self.prefix_modality = modalities, prefix_modality

    def forward(self, x: Any, mask: torch.Tensor | None = None, return_hidden: bool = False,
                modality_ids: torch.Tensor | None = None):
        ctx = self.context
        ctx.ids = self._check_ids(modality_ids, x)
        ctx.prefix, ctx.prefix_modality = self.encoder.num_prefix_tokens, self.prefix_modality
        try:
            return super().forward(x, mask, return_hidden)
        finally:
            ctx.ids = None

    def _check_ids(self, ids: torch.Tensor | None, x: Any) -> torch.Tensor | None:
        M = self.modalities
        if ids is None:
            return None  # no ids: the whole sequence is modality 0
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point() or ids.dtype == torch.bool:
            raise ShapeError(f"modality_ids must be integer [batch, length], got {getattr(ids, 'dtype', type(ids))} {list(getattr(ids, 'shape', []))}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= M):
            bad = int(ids.max()) if int(ids.max()) >= M else int(ids.min())
            raise ConfigError(f"modality_ids: id {bad} outside the valid range 0..{M - 1} (arch 'mot' modalities={M})")
        return ids
