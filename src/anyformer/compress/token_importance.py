"""Per-token importance for token filtering ("Predicting Token Impact Towards Efficient Vision
Transformer", Wang et al. 2023): how much a sample's loss rises when one of its input tokens
is masked, measured on the calibration (training) batches, one token at a time.

Masking acts where the filter will: on the tokens the layer stack receives (after input
positions). Where every mixer honours a padding mask the token is masked through it (mask
False at that token): attention then reads it nowhere and pooling heads skip it, so the
loss change is exactly what removing the token alone does, the filter's own action. The
paper instead replaces the token by zeros, which a model still attends to (a zero key
scores 0, not -inf); that is the fallback here only for a model with a mixer that ignores
masks. Prefix tokens ([CLS]) are never masked: the filter always keeps them."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.compress.prune_heads import Objective

# How a token is masked: through the key mask (exact removal), or by zeroing it (the paper).
MASK, ZERO = "key mask", "zeroed"


@dataclass
class Importance:
    """What masking each token of the calibration batches did, per batch: the stack's input
    tokens [B, L, D] and mask [B, L] | None (the filter's input), the unmasked loss per
    sample [B], and the loss increase per non-prefix token [B, L - prefix] (0 at padding)."""

    tokens: list[torch.Tensor]
    masks: list[torch.Tensor | None]
    base: list[torch.Tensor]
    delta: list[torch.Tensor]
    prefix: int
    how: str

    def real(self, i: int) -> torch.Tensor:
        """Bool [B, L - prefix]: the real (non-padding) candidate tokens of batch i."""
        mask = self.masks[i]
        if mask is None:
            return torch.ones(self.delta[i].shape, dtype=torch.bool, device=self.delta[i].device)
        return mask[:, self.prefix:]

    def per_position(self) -> list[float]:
        """The mean loss increase at each candidate position over every real token there."""
        total = sum((d * self.real(i)).sum(0) for i, d in enumerate(self.delta))
        count = sum(self.real(i).sum(0) for i in range(len(self.delta)))
        return (total / count.clamp_min(1)).tolist()


def masking(model: nn.Module) -> str:
    """MASK when every mixer of the model's stack honours a padding mask, else ZERO."""
    mixers = [block.part("mixer") for block in model.stack.blocks]
    return MASK if all(getattr(m, "supports_mask", True) for m in mixers) else ZERO


def sample_losses(objective: Objective, out: torch.Tensor, i: int) -> torch.Tensor:
    """The calibration loss of each sample of batch i [B]: the task's loss per example, or
    1 - cosine to the unfiltered model's outputs for a run with no task."""
    if objective.reference is not None:
        return 1.0 - F.cosine_similarity(out.float().flatten(1), objective.reference[i].flatten(1), dim=-1)
    target = objective.batches[i].target
    per = objective.task.strategy.per_example(out, target, "loss")
    if per is None:  # a loss with no per-example form: the batch loss of each sample alone
        per = torch.stack([objective.task.loss(out[j: j + 1], target[j: j + 1]) for j in range(len(target))])
    return per.float()


@contextmanager
def stack_input(model: nn.Module, change: Callable[[torch.Tensor, torch.Tensor | None], tuple] | None,
                seen: list) -> Iterator[None]:
    """Inside: the model's stack input (tokens [B, L, D], mask) is appended to `seen`, then
    replaced by `change(tokens, mask)` when given."""
    def hook(module: nn.Module, args: tuple) -> tuple | None:
        tokens, mask = args[0], args[1] if len(args) > 1 else None
        seen.append((tokens, mask))
        return None if change is None else (*change(tokens, mask), *args[2:])

    handle = model.stack.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def token_importance(model: nn.Module, objective: Objective, prefix: int, how: str | None = None) -> Importance:
    """Mask each non-prefix token of every calibration batch in turn (`how`: MASK or ZERO,
    default `masking(model)`) and record each sample's loss increase."""
    how = how or masking(model)
    model.eval()
    tokens, masks, base, delta = [], [], [], []
    for i in range(len(objective.batches)):
        seen: list = []
        with stack_input(model, None, seen):
            clean = sample_losses(objective, objective.output(model, i), i)
        x, mask = seen[0]
        B, L = x.shape[:2]
        rises = torch.zeros(B, L - prefix, device=x.device)
        for t in range(prefix, L):
            def change(x: torch.Tensor, mask: torch.Tensor | None, t: int = t) -> tuple:
                if how == ZERO:
                    x = x.clone()
                    x[:, t] = 0.0
                    return x, mask
                mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask.clone()
                mask[:, t] = False
                return x, mask
            with stack_input(model, change, []):
                rises[:, t - prefix] = sample_losses(objective, objective.output(model, i), i) - clean
        if mask is not None:  # a padding token has no importance: it is never a candidate
            rises = rises * mask[:, prefix:]
        tokens.append(x.float())
        masks.append(mask)
        base.append(clean)
        delta.append(rises)
    return Importance(tokens, masks, base, delta, prefix, how)
