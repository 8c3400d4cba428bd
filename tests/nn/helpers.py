"""Build any registered component at test size from its own declared example options."""
from __future__ import annotations

import torch

from anyformer import registry

DIM, HEADS, LEN, GRID = 32, 4, 16, (4, 4)


def mixer_class(name):
    return registry.get("mixer", name)


def make_mixer(name, causal=False, max_len=LEN, **extra):
    cls = mixer_class(name)
    opts = {**getattr(cls, "example_options", {}), **extra}
    grid = GRID if (cls.needs_grid or getattr(cls, "accepts_grid", False)) else None
    return registry.build("mixer", name, dim=DIM, heads=HEADS, max_len=max_len, causal=causal, grid=grid, **opts)


def make(kind, name, **extra):
    cls = registry.get(kind, name)
    opts = {**getattr(cls, "example_options", {}), **extra}
    ctx = dict(dim=DIM, heads=HEADS, max_len=LEN, num_tokens=LEN, grid=GRID)
    return registry.build(kind, name, **ctx, **opts)


def padding_mask(batch=2, length=LEN, real=11):
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, real:] = False
    mask[1, real + 2:] = False
    return mask
