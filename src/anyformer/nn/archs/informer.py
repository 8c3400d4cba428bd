"""Informer: a distilling ProbSparse encoder and a one-pass generative decoder."""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anyformer import registry
from anyformer.config import ModelConfig
from anyformer.errors import ConfigError
from anyformer.nn.block import NormFn, Sublayer
from anyformer.nn.ensemble import self_ensembled
from anyformer.nn.mixers.base import AttentionMixer
from anyformer.nn.model import AnyFormer, norm_fn
from anyformer.nn.ranges import Count, NonNegativeInt


def cross_attention(attn: AttentionMixer, x: torch.Tensor, memory: torch.Tensor,
                    memory_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Full softmax attention of queries from x [B, Lq, D] to keys/values from memory
    [B, Lk, D], through an attention mixer's q/k/v/o projections -> [B, Lq, D]."""
    q = attn.split(attn.q_proj(x))
    # Keys/values at the mixer's kv_heads (grouped-query attention), repeated to its heads.
    k, v = (attn.repeat_kv(attn.split(p(memory), attn.kv_heads)) for p in (attn.k_proj, attn.v_proj))
    allowed = None if memory_mask is None else memory_mask[:, None, None, :]
    return attn.o_proj(attn.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)))


class CrossAttentionDecoderLayer(nn.Module):
    """Decoder layer: self-attention, cross-attention to the encoder output, ffn, each a
    residual branch with the model's norm placement (Vaswani et al. 2017). x: [B, L, D]."""

    def __init__(self, self_attn: nn.Module, cross_attn: AttentionMixer, ffn: nn.Module,
                 make_norm: NormFn, placement: str, dropout: float) -> None:
        super().__init__()
        self.self_sub = Sublayer("mixer", self_attn, make_norm, placement, dropout, takes_mask=True)
        self.cross_attn = cross_attn
        self.cross_norm_in = make_norm("cross.norm_in") if placement in ("pre", "peri") else None
        self.cross_norm_out = make_norm("cross.norm_out") if placement in ("post", "peri") else None
        self.placement = placement
        self.cross_drop = nn.Dropout(dropout)
        self.ffn_sub = Sublayer("ffn", ffn, make_norm, placement, dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor,
                memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.self_sub(x)
        h = self.cross_norm_in(x) if self.cross_norm_in is not None else x
        h = cross_attention(self.cross_attn, h, memory, memory_mask)
        if self.placement == "peri":
            h = self.cross_norm_out(h)
        x = x + self.cross_drop(h)
        if self.placement == "post":
            x = self.cross_norm_out(x)
        return self.ffn_sub(x)


def forecast_shape(config: ModelConfig, encoder: nn.Module, horizon: int | None, arch: str) -> tuple[int, int]:
    """(horizon, channels) of an encoder-decoder forecaster, from its arch option or the
    config's forecast head, and the head's or the series encoder's channels."""
    head_cls = registry.get("head", config.head.name)
    if getattr(head_cls, "problem", None) != "forecast":
        raise ConfigError(f"arch {arch!r} forecasts: model.head must be 'forecast', got {config.head.name!r}")
    if getattr(encoder, "modality", None) != "series" or getattr(encoder, "mode", None) != "step":
        raise ConfigError(f"arch {arch!r} reads one token per time step: use encoder 'series' with mode 'step'")
    opts = config.head.options
    head_horizon = opts.get("horizon")
    if horizon is not None and head_horizon is not None and horizon != head_horizon:
        raise ConfigError(f"arch {arch!r}: horizon {horizon} differs from model.head.horizon {head_horizon}; set one of them")
    horizon = horizon if horizon is not None else head_horizon if head_horizon is not None else 96
    if horizon < 1:
        raise ConfigError(f"arch {arch!r}: horizon must be >= 1, got {horizon}")
    return int(horizon), int(opts.get("channels") or encoder.channels)


def forecast_projection(config: ModelConfig, encoder: nn.Module, num_tokens: int,
                        horizon: int | None, arch: str) -> nn.Module:
    """An encoder-decoder forecaster's head (a `head_fn`): each decoder token [.., D] -> the
    channels' values [.., C]; checks the forecast shape as `forecast_shape` does."""
    return nn.Linear(config.dim, forecast_shape(config, encoder, horizon, arch)[1])


@registry.register("arch", "informer")
class Informer(AnyFormer):
    """Informer (Zhou et al. 2021): series x [B, L, C] -> forecast [B, horizon, C] in one pass.

    Encoder: the configured layers (ProbSparse self-attention; distilling between layers
    via model.schedule.transition) over the `series` encoder's step tokens. Decoder: the
    last `label_len` known steps followed by `horizon` zeros, embedded by its own width-3
    circular convolution (Informer's token embedding) plus sinusoidal positions, then
    `decoder_depth` layers of causal self-attention (the configured mixer), full
    cross-attention to the encoder output and the ffn, a norm and a linear map to the
    channels; the last `horizon` positions are the forecast. label_len is capped at the
    input length. Informer's calendar-feature embeddings are left out (inputs carry none)."""

    paper = "Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting (Zhou et al. 2021)"
    # Its decoder reads the encoder's whole memory by time step: no token filter (model.token_filter).
    supports_token_filter = False

    def __init__(self, config: ModelConfig, label_len: NonNegativeInt = 48, horizon: Count | None = None,
                 decoder_depth: Count = 1) -> None:
        super().__init__(config, head_fn=partial(forecast_projection, horizon=horizon, arch="informer"))
        c = config
        self.horizon, self.channels_out = forecast_shape(c, self.encoder, horizon, "informer")
        self.channels_in = self.encoder.channels
        if self.position.applies_to not in ("input", "none"):
            raise ConfigError(f"arch 'informer' adds positions to the inputs; position {c.position.name!r} acts inside attention: use 'sinusoidal' or 'learned'")
        self.label_len = min(label_len, self.encoder.num_tokens)
        dec_len = self.label_len + self.horizon
        self.decoder_embedding = nn.Conv1d(self.channels_in, c.dim, 3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.decoder_embedding.weight, mode="fan_in", nonlinearity="leaky_relu")
        self.decoder_position = registry.build("position", "sinusoidal", dim=c.dim, num_tokens=dec_len)
        self.decoder_drop = nn.Dropout(c.dropout)
        context = dict(dim=c.dim, heads=c.heads, num_tokens=dec_len, grid=None)
        memory_len = max(self.encoder.num_tokens, dec_len)
        self.decoder_layers = nn.ModuleList(
            CrossAttentionDecoderLayer(
                registry.build("mixer", c.mixer.name, max_len=dec_len, causal=True, **context, **c.mixer.options),
                registry.build("mixer", "softmax", max_len=memory_len, **context),
                registry.build("ffn", c.ffn.name, **context, **c.ffn.options),
                norm_fn(c), c.norm.placement, c.dropout,
            )
            for _ in range(decoder_depth)
        )
        self.decoder_norm = norm_fn(c)("decoder")

    def decoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """[B, label + horizon, C]: the last label_len known steps, then zero placeholders."""
        if self.encoder.revin is not None:  # the decoder sees the series as the encoder does
            x = self.encoder.revin.normalise(x)[0]
        label = min(self.label_len, x.shape[1])
        zeros = x.new_zeros(x.shape[0], self.horizon, x.shape[2])
        return torch.cat([x[:, x.shape[1] - label:], zeros], dim=1)

    @self_ensembled
    def forward(self, x: Any, mask: torch.Tensor | None = None, return_hidden: bool = False):
        tokens, mask = self.encoder(x, mask)
        memory, memory_mask, hidden = self.encode(tokens, mask)
        dec_in = self.decoder_input(x)
        h = self.decoder_embedding(dec_in.transpose(1, 2)).transpose(1, 2)
        h = self.decoder_drop(self.decoder_position(h))
        for layer in self.decoder_layers:
            h = layer(h, memory, memory_mask)
        h = self.decoder_norm(h)
        out = self.encoder.postprocess(self.head(h[:, -self.horizon:]))
        return (out, hidden) if return_hidden else out

    def parameter_report(self) -> dict[str, int]:
        report = super().parameter_report()
        total = report.pop("total")
        report["decoder"] = sum(p.numel() for name, p in self.named_parameters() if name.startswith("decoder"))
        report["total"] = total
        return report
