"""Time series [B, L, C] -> tokens, per time step, per patch (PatchTST) or per variate
(iTransformer), with optional reversible instance normalisation (RevIN)."""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import ConfigError, ShapeError, unknown
from anyformer.nn.encoders.base import Encoder, expect
from anyformer.nn.ranges import Count
from anyformer.registry import register

MODES = ("step", "patch", "variate")
Mode = Literal[MODES]


class RevIN(nn.Module):
    """Reversible instance normalisation (Kim et al. 2022): z-score each series over time
    with its own statistics, undo it on the forecast. x: [B, L, C]."""

    def __init__(self, channels: int, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def normalise(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        mean = x.mean(1, keepdim=True).detach()
        std = (x.var(1, keepdim=True, unbiased=False) + self.eps).sqrt().detach()
        y = (x - mean) / std
        if self.weight is not None:
            y = y * self.weight + self.bias
        return y, (mean, std)

    def denormalise(self, y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mean, std = stats
        if self.weight is not None:
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * std + mean


@register("encoder", "series")
class SeriesEncoder(Encoder):
    """Series [B, L, C] -> tokens. mode 'step': one token per time step [B, L, D];
    'patch': channel-independent patches of `patch_len` every `stride` steps
    (PatchTST, Nie et al. 2023) [B*C, N, D]; 'variate': one token per variable embedding
    its whole history (iTransformer, Liu et al. 2024) [B, C, D]. `revin` normalises each
    input series and `postprocess` restores the scale of forecasts [B, H, C]."""

    paper = "PatchTST (Nie et al. 2023); iTransformer (Liu et al. 2024); RevIN (Kim et al. 2022)"
    modality = "series"

    def __init__(self, dim: int, max_len: int, channels: Count = 1, mode: Mode = "step",
                 patch_len: Count = 16, stride: Count = 8, revin: bool = False) -> None:
        super().__init__()
        if mode not in MODES:
            raise unknown("mode of encoder 'series'", mode, MODES)
        self.channels, self.mode, self.input_len = channels, mode, max_len
        self.revin = RevIN(channels) if revin else None
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None
        if mode == "step":
            self.proj = nn.Linear(channels, dim)
            self.num_tokens = max_len
        elif mode == "patch":
            if patch_len > max_len:
                raise ConfigError(
                    f"encoder 'series': patch_len {patch_len} / stride {stride} do not fit input length {max_len}"
                )
            self.patch_len, self.stride = patch_len, stride
            # PatchTST pads the end by one stride (repeating the last value) so the last
            # steps always fall in a patch.
            self.num_tokens = (max_len - patch_len) // stride + 2
            self.proj = nn.Linear(patch_len, dim)
        else:
            self.proj = nn.Linear(max_len, dim)
            self.num_tokens = channels

    @property
    def channel_independent(self) -> bool:
        return self.mode == "patch"

    def head_hints(self) -> dict[str, Any]:
        if self.mode == "patch":
            return {"channels": 1, "per_token": False}
        if self.mode == "variate":
            return {"channels": self.channels, "per_token": True}
        return {"channels": self.channels, "per_token": False}

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        expect(x, 3, "encoder 'series' input [batch, length, channels]", floating=True)
        B, L, C = x.shape
        if C != self.channels:
            raise ShapeError(f"encoder 'series' was built for {self.channels} channels, got {C}")
        if L > self.input_len or (self.mode != "step" and L != self.input_len):
            raise ShapeError(
                f"encoder 'series' ({self.mode}) expects input length {self.input_len}, got {L}; set model.max_len to the input length"
            )
        if self.revin is not None:
            x, self._stats = self.revin.normalise(x)
        if self.mode == "step":
            return self.proj(x), mask
        if self.mode == "variate":
            return self.proj(x.transpose(1, 2)), None
        series = x.transpose(1, 2).reshape(B * C, L)
        series = F.pad(series[:, None], (0, self.stride), mode="replicate")[:, 0]
        patches = series.unfold(-1, self.patch_len, self.stride)  # [B*C, N, P]
        return self.proj(patches), None

    def postprocess(self, out: torch.Tensor) -> torch.Tensor:
        if self.mode == "patch":
            # [B*C, ...] -> per-channel outputs back into one sample each.
            BC = out.shape[0]
            out = out.view(BC // self.channels, self.channels, *out.shape[1:])
            if out.dim() == 4 and out.shape[-1] == 1:  # forecast [B, C, H, 1] -> [B, H, C]
                out = out[..., 0].transpose(1, 2)
            else:  # classification logits: average the channels' votes
                out = out.mean(1)
        if self.revin is not None and self._stats is not None and out.dim() == 3 and out.shape[-1] == self.channels:
            out = self.revin.denormalise(out, self._stats)
        self._stats = None
        return out

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return torch.randn(batch, self.input_len, self.channels)
