"""Where a benchmark runs: device resolution, bf16 autocast (CUDA only), synchronisation,
and recognising out-of-memory failures."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from anyformer.errors import ConfigError, unknown

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when present else cpu; 'cuda' without a GPU is a one-line ConfigError."""
    if isinstance(device, torch.device):
        device = str(device)
    base = device.split(":")[0]
    if base not in DEVICES:
        raise unknown("device", device, DEVICES)
    if base == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available to this torch build; use --device cpu or auto")
    return torch.device(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on CUDA; nothing on CPU (this class of CPU has no fast bf16 path:
    a bf16 matmul runs ~150x slower than fp32 here)."""
    if enabled and device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA OOM, or the CPU allocator failing ('can't allocate memory')."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(err, MemoryError)
    )


def free_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
