"""Before and after, measured the same way in one process: quality, parameters the forward
pass uses, size on disk, latency and peak memory of one batch."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from anyformer.bench.memory import peak_bytes
from anyformer.bench.profiler import time_call
from anyformer.compress.data import Judged, run_batch

# What `measure` reports besides the quality metrics.
COSTS = ("parameters", "size_mb", "latency_ms", "latency_iqr_ms", "memory_mb")


def active_parameters(model: nn.Module) -> int:
    """Parameters the forward pass reads: all of them but those of paths every layer of a
    block skips (`schedule.prune`) and of blocks only dropped layers run (`schedule.drop`).
    Each tensor counts once (tied weights)."""
    stack = getattr(model, "stack", None)
    idle: set[int] = set()
    if stack is not None:
        for b, block in enumerate(stack.blocks):
            layers = stack.layers_of(b)
            running = [layer for layer in layers if layer not in stack.dropped]
            if not running:
                idle |= {id(p) for p in block.parameters()}
                continue
            for name in block.path_names:
                if all(name in stack.skip.get(layer, ()) for layer in running):
                    idle |= {id(p) for p in block.part(name).parameters()}
    seen: dict[int, int] = {id(p): p.numel() for p in model.parameters()}
    return sum(n for key, n in seen.items() if key not in idle)


def measure(model: nn.Module, data: Judged, device: torch.device, weights: Path | None = None,
            precision: str = "fp32", repeats: int = 10) -> dict[str, Any]:
    """{quality metrics, parameters, size_mb, latency_ms (median), latency_iqr_ms, memory_mb}."""
    model.eval()
    call = lambda: run_batch(model, data.example, device, precision)  # noqa: E731
    timing = time_call(call, device, warmup=2, repeats=repeats)
    return {
        **data.quality(model, device, precision),
        "parameters": active_parameters(model),
        "size_mb": round(weights.stat().st_size / 2**20, 4) if weights is not None and weights.exists() else None,
        "latency_ms": timing["median_ms"], "latency_iqr_ms": [timing["q1_ms"], timing["q3_ms"]],
        "memory_mb": peak_bytes(call, device) / 2**20,
    }
