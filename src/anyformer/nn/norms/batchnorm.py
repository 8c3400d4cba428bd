"""Batch normalisation over the real tokens of a batch (Ioffe & Szegedy 2015)."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.registry import register


@register("norm", "batchnorm")
class TokenBatchNorm(nn.Module):
    """Batch normalisation over all real tokens of the batch, per feature (Ioffe & Szegedy 2015).
    x: [B, L, D] -> [B, L, D]; padded positions (mask False) do not enter the statistics.
    In eval mode it is the per-channel affine map `folded_affine()`, so `fold_batchnorm`
    can merge it into the linears it feeds."""

    paper = "Batch Normalization (Ioffe & Szegedy 2015)"

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def batch_stats(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Mean [D], biased variance [D] and count of the real tokens of x [B, L, D]."""
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

    def folded_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) [D] of the eval-mode map x -> x * scale + shift (running statistics)."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale
