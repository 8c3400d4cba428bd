"""FEDformer: frequency-enhanced layers with seasonal-trend decomposition between sublayers."""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anyformer import registry
from anyformer.config import ModelConfig
from anyformer.errors import ConfigError, unknown
from anyformer.nn.archs.informer import forecast_projection, forecast_shape
from anyformer.nn.block import BlockContext, LayerSpec, drop_branch, make_block
from anyformer.nn.ensemble import self_ensembled
from anyformer.nn.mixers.fedformer import CROSS_ACTIVATIONS, CrossActivation, FrequencyEnhancedCrossAttention, ModeSelect
from anyformer.nn.model import AnyFormer
from anyformer.nn.ranges import Count, NonNegativeInt
from anyformer.nn.stack import parameter_counter


class MovingAverage(nn.Module):
    """Moving average along time with the ends repeated, so the length is kept for any
    kernel: k - 1 - (k - 1) // 2 copies of the first step in front, (k - 1) // 2 of the last
    behind (as FEDformer's code, which also admits even kernels). x: [B, L, C] -> [B, L, C]."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        if kernel < 1:
            raise ConfigError(f"moving_avg must be >= 1, got {kernel}")
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        back = (self.kernel - 1) // 2
        front = self.kernel - 1 - back
        L = x.shape[1]
        if self.kernel <= L:
            padded = torch.cat([x[:, :1].expand(-1, front, -1), x, x[:, -1:].expand(-1, back, -1)], dim=1)
            return F.avg_pool1d(padded.transpose(1, 2), self.kernel, stride=1).transpose(1, 2)
        # A window wider than the series: the same average by prefix sums, the repeated ends
        # counted rather than materialised (a kernel of 1e12 allocated terabytes of padding).
        i = torch.arange(L, device=x.device)
        lo, hi = (i - front).clamp(0, L), (i + back + 1).clamp(0, L)
        prefix = F.pad(x.cumsum(1), (0, 0, 1, 0))
        n_first = (front - i).clamp(min=0).to(x.dtype)[None, :, None]
        n_last = (i + back - (L - 1)).clamp(min=0).to(x.dtype)[None, :, None]
        total = prefix[:, hi] - prefix[:, lo] + n_first * x[:, :1] + n_last * x[:, -1:]
        return total / self.kernel


class SeriesDecomposition(nn.Module):
    """x -> (seasonal, trend): trend = moving average, seasonal = x - trend (Autoformer,
    Wu et al. 2021, used by FEDformer). x: [B, L, C]."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.moving_average = MovingAverage(kernel)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trend = self.moving_average(x)
        return x - trend, trend


class SeasonalLayerNorm(nn.Module):
    """LayerNorm minus its mean over time: a norm for the seasonal part (Autoformer's
    my_Layernorm). x: [B, L, D] -> [B, L, D]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)
        return h - h.mean(dim=1, keepdim=True)


class DecompositionEncoderLayer(nn.Module):
    """x + mixer(x) -> decompose -> + ffn -> decompose; the seasonal parts go on and the
    trends are dropped (FEDformer / Autoformer encoder layer). x: [B, L, D] -> [B, L, D].
    A block for LayerStack: `drop_path` drops a branch per sample (training), `skip` prunes
    one (its decomposition stays)."""

    path_names = ("mixer", "ffn")

    def __init__(self, mixer: nn.Module, ffn: nn.Module, kernel: int, dropout: float) -> None:
        super().__init__()
        self.mixer, self.ffn = mixer, ffn
        self.decomp1, self.decomp2 = SeriesDecomposition(kernel), SeriesDecomposition(kernel)
        self.drop = nn.Dropout(dropout)

    def part(self, name: str) -> nn.Module:
        if name not in self.path_names:
            raise unknown("block path", name, self.path_names)
        return getattr(self, name)

    def replace(self, name: str, module: nn.Module) -> None:
        self.part(name)
        setattr(self, name, module)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, drop_path: float = 0.0,
                skip: frozenset[str] = frozenset()) -> torch.Tensor:
        if "mixer" not in skip:
            x = x + drop_branch(self.drop(self.mixer(x, mask)), drop_path, self.training)
        x, _ = self.decomp1(x)
        if "ffn" not in skip:
            x = x + drop_branch(self.drop(self.ffn(x)), drop_path, self.training)
        x, _ = self.decomp2(x)
        return x


def decomposition_block(spec: LayerSpec, ctx: BlockContext, kernel: int) -> nn.Module:
    """FEDformer's `block_fn`: the layer's checked mixer and ffn in a decomposition layer."""
    return make_block(spec, ctx, wire=lambda mixer, ffn: DecompositionEncoderLayer(mixer, ffn, kernel, ctx.dropout))


class DecompositionDecoderLayer(nn.Module):
    """Self mixer, frequency cross attention and ffn, each followed by a decomposition; the
    seasonal part goes on, the three trends are summed and projected to the channels by a
    width-3 circular convolution (FEDformer decoder layer). -> (seasonal [B, L, D], trend [B, L, C])."""

    def __init__(self, mixer: nn.Module, cross: FrequencyEnhancedCrossAttention, ffn: nn.Module,
                 kernel: int, dim: int, channels: int, dropout: float) -> None:
        super().__init__()
        self.mixer, self.cross, self.ffn = mixer, cross, ffn
        self.decomps = nn.ModuleList(SeriesDecomposition(kernel) for _ in range(3))
        self.trend_projection = nn.Conv1d(dim, channels, 3, padding=1, padding_mode="circular", bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, t1 = self.decomps[0](x + self.drop(self.mixer(x)))
        x, t2 = self.decomps[1](x + self.drop(self.cross(x, memory)))
        x, t3 = self.decomps[2](x + self.drop(self.ffn(x)))
        trend = self.trend_projection((t1 + t2 + t3).transpose(1, 2)).transpose(1, 2)
        return x, trend


@registry.register("arch", "fedformer")
class FEDformer(AnyFormer):
    """FEDformer (Zhou et al. 2022): series x [B, L, C] -> forecast [B, horizon, C] in one pass.

    Encoder: the `series` step tokens through decomposition layers (the configured mixer,
    FEB-f for the preset, and ffn, each followed by a moving-average decomposition that
    keeps the seasonal part), then a seasonal layer norm. Decoder: x is decomposed; the
    seasonal input is its last `label_len` steps then `horizon` zeros, the trend input its
    last `label_len` trend steps then the input's mean; the seasonal part runs through
    `decoder_depth` layers of self mixer, frequency cross attention (FEA-f; `modes` and
    `mode_select` default to the mixer's; `cross_activation`) to the encoder and ffn with decompositions, whose trends are
    projected and accumulated onto the trend input; forecast = trend + projected seasonal,
    last `horizon` steps. `moving_avg` is the decomposition kernel (FEDformer's code and
    paper setting: 24; Time-Series-Library uses 25). label_len is capped at the input
    length; calendar-feature embeddings are left out (inputs carry none)."""

    paper = "FEDformer: Frequency Enhanced Decomposed Transformer for Long-term Series Forecasting (Zhou et al. 2022)"
    # Its decomposition layers read the series by time step: no token filter (model.token_filter).
    supports_token_filter = False

    def __init__(self, config: ModelConfig, label_len: NonNegativeInt = 48, horizon: Count | None = None,
                 decoder_depth: Count = 1, moving_avg: Count = 24, modes: Count | None = None,
                 mode_select: ModeSelect | None = None, cross_activation: CrossActivation = "tanh") -> None:
        if cross_activation not in CROSS_ACTIVATIONS:
            raise ConfigError(f"arch 'fedformer': cross_activation must be one of {', '.join(CROSS_ACTIVATIONS)}, got {cross_activation!r}")
        super().__init__(config, block_fn=partial(decomposition_block, kernel=moving_avg),
                         head_fn=partial(forecast_projection, horizon=horizon, arch="fedformer"))
        c = config
        self.moving_avg = moving_avg
        self.horizon, self.channels_out = forecast_shape(c, self.encoder, horizon, "fedformer")
        self.channels_in = self.encoder.channels
        if self.position.applies_to not in ("input", "none"):
            raise ConfigError(f"arch 'fedformer' takes positions on the inputs or none; {c.position.name!r} acts inside attention")
        if self.channels_out != self.channels_in:
            raise ConfigError(f"arch 'fedformer' adds the trend of its {self.channels_in} input channels to the forecast: model.head.channels must be {self.channels_in}")
        if self.final_norm is not None:
            self.final_norm = SeasonalLayerNorm(c.dim)
        self.decomposition = SeriesDecomposition(moving_avg)
        self.label_len = min(label_len, self.encoder.num_tokens)
        dec_len = self.label_len + self.horizon
        self.decoder_embedding = nn.Conv1d(self.channels_in, c.dim, 3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.decoder_embedding.weight, mode="fan_in", nonlinearity="leaky_relu")
        self.decoder_drop = nn.Dropout(c.dropout)
        context = dict(dim=c.dim, heads=c.heads, num_tokens=dec_len, grid=None)
        # The cross attention keeps as many modes, chosen the same way, as the mixer unless told.
        modes = modes if modes is not None else c.mixer.options.get("modes", 64)
        mode_select = mode_select if mode_select is not None else c.mixer.options.get("mode_select", "random")
        self.decoder_layers = nn.ModuleList(
            DecompositionDecoderLayer(
                registry.build("mixer", c.mixer.name, max_len=dec_len, causal=False, **context, **c.mixer.options),
                FrequencyEnhancedCrossAttention(c.dim, c.heads, dec_len, self.encoder.num_tokens, modes, mode_select, cross_activation),
                registry.build("ffn", c.ffn.name, **context, **c.ffn.options),
                moving_avg, c.dim, self.channels_in, c.dropout,
            )
            for _ in range(decoder_depth)
        )
        self.decoder_norm = SeasonalLayerNorm(c.dim)

    def decoder_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(seasonal, trend) decoder inputs [B, label + horizon, C], as the paper's Eq. (1)."""
        if self.encoder.revin is not None:  # the decoder sees the series as the encoder does
            x = self.encoder.revin.normalise(x)[0]
        seasonal, trend = self.decomposition(x)
        label = min(self.label_len, x.shape[1])
        start = x.shape[1] - label
        mean = x.mean(dim=1, keepdim=True).expand(-1, self.horizon, -1)
        trend_init = torch.cat([trend[:, start:], mean], dim=1)
        seasonal_init = F.pad(seasonal[:, start:], (0, 0, 0, self.horizon))
        return seasonal_init, trend_init

    @self_ensembled
    def forward(self, x: Any, mask: torch.Tensor | None = None, return_hidden: bool = False):
        tokens, mask = self.encoder(x, mask)
        memory, mask, hidden = self.encode(tokens, mask)
        seasonal, trend = self.decoder_inputs(x)
        h = self.decoder_drop(self.decoder_embedding(seasonal.transpose(1, 2)).transpose(1, 2))
        for layer in self.decoder_layers:
            h, residual_trend = layer(h, memory)
            trend = trend + residual_trend
        out = trend + self.head(self.decoder_norm(h))
        out = self.encoder.postprocess(out[:, -self.horizon:])
        return (out, hidden) if return_hidden else out

    def parameter_report(self) -> dict[str, int]:
        count = parameter_counter()
        report = {"encoder": count(self.encoder), "position": count(self.position)}
        for i, block in enumerate(self.stack.blocks):
            report[f"block {i} mixer"] = count(block.mixer)
            report[f"block {i} ffn"] = count(block.ffn)
        report["final norm"] = count(self.final_norm)
        report["decoder"] = sum(p.numel() for n, p in self.named_parameters() if n.startswith("decoder"))
        report["head"] = count(self.head)
        report["total"] = sum(p.numel() for p in self.parameters())
        return report
