"""SLAB's progressive re-parameterised BatchNorm, and folding it into the next linear layer.

Training loop contract: call `set_progress(fraction)` (fraction of training done, 0..1) on
every module that has it, before each step; `fold_batchnorm(model)` after training turns
each foldable norm into an identity and moves its affine map into the linears it feeds."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.errors import ConfigError
from anyformer.nn.norms import LayerNorm, TokenBatchNorm
from anyformer.registry import register


class RepBatchNorm(nn.Module):
    """RepBN (SLAB): BN(x) + eta * x with a learnable scalar eta (init 1). x: [B, L, D] -> same.
    In eval mode it is a per-channel affine map x * scale + shift, hence foldable."""

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.bn = TokenBatchNorm(dim, eps=eps, momentum=momentum)
        self.eta = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.bn(x, mask) + self.eta * x

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) [D] of the eval-mode map x -> x * scale + shift."""
        bn = self.bn
        s = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return s + self.eta, bn.bias - bn.running_mean * s


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


def _input_linears(fn: nn.Module) -> list[nn.Linear]:
    """The linear layers that read a sublayer's input directly (and nothing else does)."""
    from anyformer.nn.ffn.glu import GLUFeedForward
    from anyformer.nn.ffn.mlp import MLP
    from anyformer.nn.ffn.moe import MixtureOfExperts
    from anyformer.nn.mixers.base import AttentionMixer

    if isinstance(fn, AttentionMixer) and type(fn).__name__ in FOLDABLE_MIXERS:
        return [fn.q_proj, fn.k_proj, fn.v_proj]
    if isinstance(fn, MLP):
        return [fn.fc1]
    if isinstance(fn, GLUFeedForward):
        return [fn.gate, fn.up]
    if isinstance(fn, MixtureOfExperts):
        return [fn.router, *(e.fc1 for e in fn.experts)]
    return []


# Mixers whose only use of their input is the q/k/v projections.
FOLDABLE_MIXERS = {"SoftmaxAttention", "LinearAttention", "LocalAttention"}


@torch.no_grad()
def _fold_into(linear: nn.Linear, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """W (x * s + c) + b = (W diag(s)) x + (W c + b)."""
    shift_out = linear.weight @ shift.to(linear.weight.dtype)
    linear.weight.mul_(scale.to(linear.weight.dtype))
    if linear.bias is None:
        linear.bias = nn.Parameter(shift_out)
    else:
        linear.bias.add_(shift_out)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every `prepbn` norm that feeds a sublayer (pre/peri input norm) into that
    sublayer's input linears and replace it with an identity; returns how many were folded.
    Needs lam = 0 (the end of the schedule: call set_progress(1.0)) and eval-mode statistics.
    Norms on the residual stream (post placement, outputs, the final norm) stay as they are."""
    from anyformer.nn.block import Sublayer
    from anyformer.nn.norms import NoNorm

    folded = 0
    for sub in model.modules():
        if not isinstance(sub, Sublayer) or not isinstance(sub.norm_in, ProgressiveRepBatchNorm):
            continue
        norm = sub.norm_in
        if float(norm.lam) != 0.0:
            raise ConfigError(f"fold_batchnorm: norm 'prepbn' has lam={float(norm.lam):.3f}; folding needs lam=0 (call set_progress(1.0))")
        linears = _input_linears(sub.fn)
        if not linears:
            continue
        scale, shift = norm.rep_bn.affine()
        for linear in linears:
            _fold_into(linear, scale, shift)
        sub.norm_in = NoNorm(scale.shape[0])
        folded += 1
    return folded
