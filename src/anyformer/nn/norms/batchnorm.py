"""Batch normalisation over the real tokens of a batch (Ioffe & Szegedy 2015)."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.nn.ranges import Epsilon, Fraction
from anyformer.errors import ShapeError
from anyformer.registry import register


def require_batch_statistics(values: int, owner: str, training: bool) -> None:
    """torch's BatchNorm layers refuse one value per channel in training (there is no
    variance to take); say so in one line, naming the part and the way out."""
    if training and values <= 1:
        raise ShapeError(
            f"{owner} normalises each channel over the batch in training, and this input gives it one value per "
            "channel (a batch of 1 with one token or pixel left); train with a batch of at least 2"
        )


@register("norm", "batchnorm")
class TokenBatchNorm(nn.Module):
    """Batch normalisation over all real tokens of the batch, per feature (Ioffe & Szegedy 2015).
    x: [B, L, D] -> [B, L, D]; padded positions (mask False) do not enter the statistics.
    In eval mode it is the per-channel affine map `folded_affine()`, so `fold_batchnorm`
    can merge it into the linears it feeds; so is a training batch with no real token. In
    training, padded positions of the output are zeros."""

    paper = "Batch Normalization (Ioffe & Szegedy 2015)"

    def __init__(self, dim: int, eps: Epsilon = 1e-5, momentum: Fraction = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def batch_stats(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Mean [D], biased variance [D] and count of the real tokens of x [B, L, D] (the
        running statistics and 0 when there is none)."""
        flat = x.reshape(-1, x.shape[-1])
        if mask is not None:
            flat = flat[mask.reshape(-1)]
        n = flat.shape[0]
        if n == 0:  # padding only: no statistics (forward falls back to the running ones)
            return self.running_mean.to(x.dtype), self.running_var.to(x.dtype), 0
        mean = flat.mean(0)
        var = flat.var(0, unbiased=False)
        return mean, var, n

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n = None
        if self.training:
            mean, var, n = self.batch_stats(x, mask)
        if n:
            with torch.no_grad():
                unbiased = var * n / max(n - 1, 1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        else:
            # Eval, or a training batch of padding only (no real token to take statistics
            # of: the mean of none is NaN): the running statistics, left as they are.
            mean, var = self.running_mean.to(x.dtype), self.running_var.to(x.dtype)
        out = (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        if n and mask is not None:
            # Padded tokens are not what the statistics describe: a lone real token has
            # variance 0, and 1 / sqrt(eps) then scales the padding up layer after layer
            # until it overflows. Nobody reads them: they leave as zeros.
            out = out * mask[..., None].to(out.dtype)
        return out

    def folded_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) [D] of the eval-mode map x -> x * scale + shift (running statistics)."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale
