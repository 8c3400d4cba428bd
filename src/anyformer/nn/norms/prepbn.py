"""SLAB's progressive re-parameterised BatchNorm (Guo et al. 2024).

Training loop contract: call `set_progress(fraction)` (fraction of training done, 0..1) on
every module that has it, before each step; after training, `fold_batchnorm(model)`
(norms/folding.py) turns each foldable norm into an identity and moves its affine map into
the linears it feeds."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.errors import ConfigError
from anyformer.nn.norms.batchnorm import TokenBatchNorm
from anyformer.nn.norms.layernorm import LayerNorm
from anyformer.registry import register


class RepBatchNorm(nn.Module):
    """RepBN (SLAB, Guo et al. 2024): BN(x) + eta * x with a learnable scalar eta (init 1).
    x: [B, L, D] -> same. In eval mode it is a per-channel affine map x * scale + shift,
    hence foldable."""

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.bn = TokenBatchNorm(dim, eps=eps, momentum=momentum)
        self.eta = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.bn(x, mask) + self.eta * x

    def folded_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) [D] of the eval-mode map x -> x * scale + shift."""
        scale, shift = self.bn.folded_affine()
        return scale + self.eta, shift


@register("norm", "prepbn")
class ProgressiveRepBatchNorm(nn.Module):
    """Progressive re-parameterised BatchNorm (Guo et al. 2024, SLAB). x: [B, L, D] -> [B, L, D].

    out = lam * LayerNorm(x) + (1 - lam) * RepBN(x), RepBN(x) = BN(x) + eta x. lam is 1 for
    the first `warmup` fraction of training, then decays linearly to 0 at the end (SLAB's
    linear schedule); `set_progress(fraction)` sets it and the buffer is saved with the
    weights, so a resumed run continues the schedule. lam is used in train and eval alike;
    at lam = 0 the norm is a pure BN that `fold_batchnorm` can merge into the next linear."""

    paper = "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive Re-parameterized Batch Normalization (Guo et al. 2024)"

    def __init__(self, dim: int, warmup: float = 0.0, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= warmup < 1.0:
            raise ConfigError(f"norm 'prepbn': warmup is a fraction of training in [0, 1), got {warmup}")
        self.warmup = warmup
        self.layer_norm = LayerNorm(dim, eps=eps)
        self.rep_bn = RepBatchNorm(dim, eps=eps, momentum=momentum)
        self.register_buffer("lam", torch.ones(()))

    def set_progress(self, fraction: float) -> None:
        """fraction of training done (0..1) -> lam: 1 during warmup, then linear to 0."""
        f = min(max(float(fraction), 0.0), 1.0)
        lam = 1.0 if f <= self.warmup else 1.0 - (f - self.warmup) / (1.0 - self.warmup)
        self.lam.fill_(lam)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        lam = self.lam.to(x.dtype)
        return lam * self.layer_norm(x) + (1 - lam) * self.rep_bn(x, mask)

    def folded_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) [D] of the eval-mode map at the schedule's end; a ConfigError while
        lam > 0, since the LayerNorm share is not an affine map of x."""
        if float(self.lam) != 0.0:
            raise ConfigError(f"fold_batchnorm: norm 'prepbn' has lam={float(self.lam):.3f}; folding needs lam=0 (call set_progress(1.0))")
        return self.rep_bn.folded_affine()
