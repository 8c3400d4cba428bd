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


def sine_windows(count: int = 16, length: int = 40, trend: float = 0.0):
    """Input/target windows [count, 32, 2] / [count, length - 32, 2] of two sinusoids."""
    import math

    t = torch.arange(200, dtype=torch.float32)
    series = torch.stack([torch.sin(2 * math.pi * t / 16), torch.cos(2 * math.pi * t / 24)], dim=-1) + trend * t[:, None]
    starts = torch.randint(0, 200 - length, (count,))
    windows = torch.stack([series[s:s + length] for s in starts])
    return windows[:, :32], windows[:, 32:]


def adam_losses(model, x, y, steps: int = 20, lr: float = 1e-3) -> list[float]:
    """MSE of `model(x)` against `y` over `steps` Adam steps."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def at_end_of_schedule(model, images):
    """`model` as training leaves it, in eval mode: every scheduled module at the end of its
    schedule (prepbn: lam = 0) and running statistics moved away from their init."""
    model.train()
    for m in model.modules():
        if hasattr(m, "set_progress"):
            m.set_progress(1.0)
    for _ in range(3):
        model(images)
    return model.eval()
