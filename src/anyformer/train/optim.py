"""AdamW with decay only where it belongs, and the learning-rate schedules."""
from __future__ import annotations

import math

import torch
from torch import nn

from anyformer.train.config import TrainConfig


def _no_decay_ids(model: nn.Module) -> set[int]:
    """Norm scales/shifts, biases, embeddings, position tables and special tokens: every
    parameter of rank < 2, everything owned by an embedding or position module, and
    learned tokens (cls, queries) named as such."""
    ids: set[int] = set()
    for module in model.modules():
        is_table = isinstance(module, nn.Embedding) or getattr(module, "registry_kind", None) == "position"
        for name, p in module.named_parameters(recurse=False):
            if is_table or p.ndim < 2 or name in ("cls", "query") or name.endswith("_token"):
                ids.add(id(p))
    return ids


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    skip = _no_decay_ids(model)
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if id(p) in skip else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # foreach is the fast path on CPU and CUDA; fused exists only on some devices.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), foreach=True)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr / cfg.lr
    if cfg.schedule == "linear":
        return floor + (1 - floor) * (1 - progress)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
