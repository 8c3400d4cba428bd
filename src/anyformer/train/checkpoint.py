"""Run-directory files, written so that a run killed at any moment loses nothing finished.

Single files are written to a temporary name and renamed. A checkpoint spans three files
(model.safetensors, state.safetensors, state.json), so it is committed like a journal:
all temporaries are written and flushed, a `checkpoint.commit` marker is written, the
files are renamed, and the marker is removed. On resume a marker left behind means the
temporaries are complete and the renames are finished; temporaries without a marker are
an interrupted write and are discarded. Only safetensors is ever loaded: no pickle.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from anyformer.errors import DataError

CHECKPOINT_FILES = ("model.safetensors", "state.safetensors", "state.json")
MARKER = "checkpoint.commit"


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    _fsync_write(tmp, text.encode())
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def unique_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict without aliases (a tied weight is stored once, under its first name),
    contiguous on CPU as safetensors needs."""
    seen: set[tuple] = set()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in module.state_dict().items():
        if tensor.numel():
            ident = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
            if ident in seen:
                continue
            seen.add(ident)
        out[name] = tensor.detach().cpu().contiguous()
    return out


def save_weights(module: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(unique_state(module), str(tmp), metadata=metadata or {})
    os.replace(tmp, path)


def load_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Load safetensors weights; tied parameters stored once are restored through the tie."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no weights at {path}; was the run finished or checkpointed?")
    try:
        tensors = load_file(str(path))
    except Exception as err:  # a corrupt or foreign file
        raise DataError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        missing, unexpected = module.load_state_dict(tensors, strict=False)
    except RuntimeError as err:  # shape mismatch
        detail = str(err).strip().splitlines()[-1].strip()
        raise DataError(f"{path} does not match this model ({detail}); was it trained with another config?") from None
    current = module.state_dict()
    loaded_ptrs = {current[k].data_ptr() for k in tensors if k in current and current[k].numel()}
    really_missing = [k for k in missing if current[k].data_ptr() not in loaded_ptrs]
    if really_missing or unexpected:
        raise DataError(
            f"{path} does not match this model (missing {really_missing[:3]}, unexpected {list(unexpected)[:3]}); was it trained with another config?"
        )


# ---------------------------------------------------------------- optimizer state

def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state_dict -> tensors for safetensors + JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


# ---------------------------------------------------------------- the checkpoint journal

def write_checkpoint(run_dir: Path, model: torch.nn.Module, state_tensors: dict[str, torch.Tensor],
                     state_json: dict[str, Any]) -> None:
    """Commit model + training state atomically as one checkpoint."""
    run_dir = Path(run_dir)
    step = str(state_json.get("step", ""))
    tmp_model = run_dir / "model.safetensors.tmp"
    tmp_state = run_dir / "state.safetensors.tmp"
    tmp_json = run_dir / "state.json.tmp"
    save_file(unique_state(model), str(tmp_model), metadata={"step": step})
    save_file({k: v.contiguous() for k, v in state_tensors.items()}, str(tmp_state), metadata={"step": step})
    _fsync_write(tmp_json, (json.dumps(state_json, indent=2, sort_keys=True) + "\n").encode())
    _fsync_write(run_dir / MARKER, step.encode())
    finish_commit(run_dir)


def finish_commit(run_dir: Path) -> None:
    for name in CHECKPOINT_FILES:
        tmp = run_dir / (name + ".tmp")
        if tmp.exists():
            os.replace(tmp, run_dir / name)
    (run_dir / MARKER).unlink(missing_ok=True)


def recover(run_dir: Path) -> None:
    """Finish a checkpoint whose commit marker survived a kill; drop half-written ones."""
    run_dir = Path(run_dir)
    if (run_dir / MARKER).exists():
        finish_commit(run_dir)
    for name in CHECKPOINT_FILES:
        (run_dir / (name + ".tmp")).unlink(missing_ok=True)


def read_checkpoint(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(state tensors, state.json) of the last committed checkpoint, or None."""
    run_dir = Path(run_dir)
    recover(run_dir)
    if not (run_dir / "state.json").exists():
        return None
    meta = json.loads((run_dir / "state.json").read_text())
    tensors = load_file(str(run_dir / "state.safetensors"))
    return tensors, meta
