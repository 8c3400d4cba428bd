"""SLAB's progressive re-parameterised BatchNorm (Guo et al. 2024).

Training loop contract: call `set_progress(fraction)` (fraction of training done, 0..1) on
every module that has it, once per optimizer step before it; after training,
`fold_batchnorm(model)` (norms/folding.py) turns each foldable norm into an identity and
moves its affine map into the linears it feeds. No call is needed before folding: the
eval-mode map of 'prepbn' is RepBN alone at every point of the schedule."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.errors import ConfigError
from anyformer.nn.norms.batchnorm import TokenBatchNorm
from anyformer.nn.norms.layernorm import LayerNorm
from anyformer.nn.ranges import Epsilon, Fraction
from anyformer.registry import register

# SLAB-DeiT/Swin decay lambda over 60k iterations (step=60000 in models/slab_deit.py and
# slab_swin.py) of 300 epochs x 1251 iterations (ImageNet at 8 x 128 images) = 375k.
PAPER_DECAY = 60_000 / 375_000
# Tolerance of the warmup + decay <= 1 check: 0.84 + 0.16 must pass despite rounding.
_SUM_SLACK = 1e-9


class RepBatchNorm(nn.Module):
    """RepBN (SLAB, Guo et al. 2024): BN(x) + eta * x with a learnable scalar eta (init 1).
    x: [B, L, D] -> same. In eval mode it is a per-channel affine map x * scale + shift,
    hence foldable."""

    def __init__(self, dim: int, eps: Epsilon = 1e-5, momentum: Fraction = 0.1) -> None:
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
    """Progressive re-parameterised BatchNorm (Guo et al. 2024, SLAB). x: [B, L, D] (mask [B, L]) -> [B, L, D].

    Training: out = lam * LayerNorm(x) + (1 - lam) * RepBN(x), RepBN(x) = BN(x) + eta x.
    Eval: out = RepBN(x) alone, whatever lam is, so it is always the affine map that
    `fold_batchnorm` merges into the next linear. With f the training fraction done
    (`set_progress`): lam = 1 for f < warmup (pure LayerNorm), lam = r0 * (1 - (f - warmup)
    / decay) over the decay window, lam = 0 (pure RepBN) from f = warmup + decay on.

    Follows the reference (github xinghaochen/SLAB, classification/models/prepbn.py,
    LinearNorm): lamda = r0 * iter / total_step with iter counting down from `step` to 0,
    pure LayerNorm while `warm` > 0, norm2 (RepBN) alone in eval. Source numbers:
    step=60000 for SLAB-DeiT and SLAB-Swin of 300 epochs x 1251 iterations = 375k, hence
    decay=0.16 (CSwin uses 120k = 0.32, PVT the default 300k = 0.8); warm=0 in every
    model (the option exists, no config sets it), hence warmup=0; r0=1.

    Differences: the reference counts training forward calls (every micro-batch), this
    counts optimizer steps through the trainer's progress fraction; and the reference
    skips RepBN during warm-up, whereas here both branches always run in training (every
    parameter stays in the graph, as DDP without unused-parameter search needs), so BN
    running statistics already move during warm-up. Outputs are the same."""

    paper = "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive Re-parameterized Batch Normalization (Guo et al. 2024)"

    def __init__(self, dim: int, warmup: Fraction = 0.0, decay: Fraction = PAPER_DECAY, r0: Fraction = 1.0,
                 eps: Epsilon = 1e-5, momentum: Fraction = 0.1) -> None:
        super().__init__()
        self.warmup, self.decay, self.r0 = float(warmup), float(decay), float(r0)
        if self.warmup + self.decay > 1.0 + _SUM_SLACK:
            raise ConfigError(f"norm 'prepbn': warmup + decay must be at most 1 (the whole training), got {warmup} + {decay}")
        self.layer_norm = LayerNorm(dim, eps=eps)
        self.rep_bn = RepBatchNorm(dim, eps=eps, momentum=momentum)
        # A buffer, so a checkpoint carries the mix it was saved under (same key as before).
        self.register_buffer("lam", torch.ones(()))
        self.set_progress(0.0)

    def lam_at(self, fraction: float) -> float:
        """LayerNorm weight lam at training fraction `fraction` (clamped to [0, 1])."""
        f = min(max(float(fraction), 0.0), 1.0)
        if f < self.warmup:
            return 1.0
        if f < self.warmup + self.decay:  # never true for decay = 0: no division by zero
            return self.r0 * (1.0 - (f - self.warmup) / self.decay)
        return 0.0

    def set_progress(self, fraction: float) -> None:
        """Fraction of training done (0..1), once per optimizer step -> the buffer lam."""
        self.lam.fill_(self.lam_at(fraction))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training:
            return self.rep_bn(x, mask)
        lam = self.lam.to(x.dtype)
        return lam * self.layer_norm(x) + (1 - lam) * self.rep_bn(x, mask)

    def folded_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) [D] of the eval-mode map, RepBN alone at any lam."""
        return self.rep_bn.folded_affine()

    def extra_repr(self) -> str:
        return f"warmup={self.warmup}, decay={self.decay}, r0={self.r0}"
