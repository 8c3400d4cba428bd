"""Random-number generators: seed every one, capture their states for a checkpoint and
restore them, so a resumed run draws exactly what an uninterrupted one would."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every CUDA device) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_tensors() -> dict[str, torch.Tensor]:
    """torch's CPU generator state as 'rng.torch' and each CUDA device's as 'rng.cuda.I'
    (uint8 tensors, as checkpoints store them)."""
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def rng_meta() -> dict[str, Any]:
    """Python's and NumPy's generator states as JSON lists: {'python_rng', 'numpy_rng'}."""
    py = random.getstate()
    npst = np.random.get_state()
    return {"python_rng": [py[0], list(py[1]), py[2]],
            "numpy_rng": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])]}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(rng_tensors(), rng_meta()): everything `restore_rng` needs to replay the draws."""
    return rng_tensors(), rng_meta()


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Set every generator back to a captured state. CUDA states are restored when this
    machine has a GPU (a checkpoint taken on a GPU resumes on CPU without them)."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors, key=_cuda_index) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    random.setstate((meta["python_rng"][0], tuple(meta["python_rng"][1]), meta["python_rng"][2]))
    np_state = meta["numpy_rng"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))


def _cuda_index(key: str) -> tuple[int, str]:
    # Device order, not string order: 'rng.cuda.10' sorts after 'rng.cuda.9'.
    tail = key.rsplit(".", 1)[-1]
    return (int(tail), key) if tail.isdigit() else (-1, key)
