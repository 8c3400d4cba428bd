"""Normalisation layers. Contract: `build("norm", name, dim)`; forward(x [B, L, D], mask=None)."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.registry import register


@register("norm", "layernorm")
class LayerNorm(nn.LayerNorm):
    """Layer normalisation over the feature dim (Ba et al. 2016). x: [..., D] -> [..., D]."""

    paper = "Layer Normalization (Ba et al. 2016)"

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__(dim, eps=eps, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


@register("norm", "rmsnorm")
class RMSNorm(nn.RMSNorm):
    """Root-mean-square normalisation, no centring (Zhang & Sennrich 2019). x: [..., D] -> [..., D]."""

    paper = "Root Mean Square Layer Normalization (Zhang & Sennrich 2019)"

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__(dim, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


@register("norm", "batchnorm")
class TokenBatchNorm(nn.Module):
    """Batch normalisation over all real tokens of the batch, per feature (Ioffe & Szegedy 2015).
    x: [B, L, D] -> [B, L, D]; padded positions (mask False) do not enter the statistics."""

    paper = "Batch Normalization (Ioffe & Szegedy 2015)"

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def batch_stats(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        flat = x.reshape(-1, x.shape[-1])
        if mask is not None:
            flat = flat[mask.reshape(-1)]
        n = flat.shape[0]
        mean = flat.mean(0)
        var = flat.var(0, unbiased=False)
        return mean, var, n

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            mean, var, n = self.batch_stats(x, mask)
            with torch.no_grad():
                unbiased = var * n / max(n - 1, 1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        else:
            mean, var = self.running_mean.to(x.dtype), self.running_var.to(x.dtype)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


@register("norm", "none")
class NoNorm(nn.Module):
    """Identity: no normalisation (the ablation baseline)."""

    paper = "-"

    def __init__(self, dim: int) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x
