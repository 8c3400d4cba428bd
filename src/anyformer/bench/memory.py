"""Peak memory of one step.

CUDA: `torch.cuda.max_memory_allocated` after a reset, minus what was allocated before the
step (the caching allocator's own view).

CPU has no allocator statistics, so `LiveTensorBytes` is a TorchDispatchMode that sees
every aten op's outputs: each new storage is recorded with its size and a weak reference
(`StorageWeakRef`, which expires when the storage is freed, including tensors autograd
holds only from C++). After every op the bytes of still-live recorded storages are summed;
the peak is the largest such sum. So it reports the tensors allocated *by the step*
(activations, saved tensors, gradients, optimizer state created in it), not the memory
already live before (weights, inputs), at op granularity: scratch buffers internal to one
kernel are not seen. It slows the step down, so it runs in a pass of its own, never while
timing.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from anyformer.runtime import synchronize


class LiveTensorBytes(TorchDispatchMode):
    """Tracks bytes of storages created while active; `peak` is the largest live total."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[tuple[str, int], tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0
        self._preexisting: dict[tuple[str, int], StorageWeakRef] = {}

    def _note_inputs(self, args: Any) -> None:
        # Storages that exist before the step (weights, inputs) are not the step's allocations.
        for t in tree_flatten(args)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key = (str(t.device), st.data_ptr())
                if key not in self.live and key not in self._preexisting:
                    self._preexisting[key] = StorageWeakRef(st)

    def _refresh(self) -> None:
        total = 0
        for key in list(self.live):
            ref, nbytes = self.live[key]
            if ref.expired():
                del self.live[key]
            else:
                total += nbytes
        self.current = total
        self.peak = max(self.peak, total)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self._note_inputs((args, kwargs))
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                st = t.untyped_storage()
                key = (str(t.device), st.data_ptr())
                if st.nbytes() == 0:
                    continue
                pre = self._preexisting.get(key)
                if pre is not None:
                    if not pre.expired():
                        continue  # an in-place op on a weight or input
                    del self._preexisting[key]  # freed, and its address reused by the step
                old = self.live.get(key)
                if old is None or old[0].expired():
                    self.live[key] = (StorageWeakRef(st), st.nbytes())
        self._refresh()
        return out


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated by one call of `fn` above what was live before it."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    tracker = LiveTensorBytes()
    with tracker:
        fn()
    return int(tracker.peak)
