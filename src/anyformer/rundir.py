"""Run directories on disk: every file written so that a run killed at any moment loses
nothing finished, and read back with one-line errors naming the file.

Single files are written to a temporary name, flushed to disk (fsync) and renamed. A
checkpoint spans three files (model.safetensors, state.safetensors, state.json), so it is
committed like a journal: all temporaries are written and flushed, a `checkpoint.commit`
marker is written, the files are renamed, and the marker is removed. On resume a marker
left behind means the temporaries are complete and the renames are finished; temporaries
without a marker are an interrupted write and are discarded. Weights are only ever stored
and loaded as safetensors: no pickle is ever loaded.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from anyformer.errors import DataError

CHECKPOINT_FILES = ("model.safetensors", "state.safetensors", "state.json")
MARKER = "checkpoint.commit"


# ---------------------------------------------------------------- atomic writes

def fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to `path.tmp`, fsync, rename: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fsync_write(tmp, data)
    os.replace(tmp, path)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def jsonable(obj: Any) -> Any:
    """Plain JSON types: tensors/devices/dtypes as strings, non-finite floats as None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (int, str, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    return str(obj)


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """JSON (sorted keys, non-finite floats as null) written atomically."""
    return atomic_write_text(path, json.dumps(jsonable(data), indent=2, sort_keys=True) + "\n")


def slug(name: str) -> str:
    """A file-system-safe folder name for a model name ('vit+linear' stays readable) that
    stays inside the folder it is joined to: no separators, and no leading dot, so a name of
    dots (a model file named '...yaml' is model '..') is never the parent folder."""
    safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)
    if safe.startswith("."):
        safe = "_" + safe[1:]
    return safe or "_"


# ---------------------------------------------------------------- reading

def read_json(path: str | Path) -> Any:
    """A JSON file, or a DataError naming it when it is missing, truncated or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); the file is damaged: restore it or start a new run") from None


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's resolved config.yaml (model, task, train)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise DataError(f"{run_dir} is not a run directory (no config.yaml); pass a folder written by `anyformer train`")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise DataError(f"{path} is not valid YAML ({str(err).splitlines()[0]}); restore it or train again") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise DataError(f"{path} holds no model config; restore it from a copy or train again")
    return config


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of a run's metrics.jsonl, in order ([] when there is none yet)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- weights (safetensors only)

def run_precision(run_dir: str | Path, config: dict[str, Any]) -> str:
    """The precision a run was trained and evaluated in (what `auto` chose then, as its
    summary.json records it), else its config's `train.precision`: scoring it again in the
    same precision gives its numbers again."""
    summary = Path(run_dir) / "summary.json"
    chosen = read_json(summary).get("precision") if summary.exists() else None
    return chosen or (config.get("train") or {}).get("precision", "auto")


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


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a DataError for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no weights at {path}; was the run finished or checkpointed?")
    try:
        return load_file(str(path))
    except Exception as err:  # a corrupt or foreign file (a pickle, say): never unpickled
        raise DataError(f"{path}: not a readable safetensors file ({err})") from None


def assign_tensors(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load `tensors` into `module` by name: (its parameters and persistent buffers left
    unset, the names it does not have). A tied tensor set through any one of its names is
    set (safetensors stores it once). A shape mismatch raises load_state_dict's RuntimeError."""
    missing, unexpected = module.load_state_dict(tensors, strict=False)
    current = module.state_dict()
    loaded = {current[k].data_ptr() for k in tensors if k in current and current[k].numel()}
    return [k for k in missing if current[k].data_ptr() not in loaded], list(unexpected)


def load_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Load safetensors weights; tied parameters stored once are restored through the tie."""
    tensors = read_tensors(path)
    try:
        really_missing, unexpected = assign_tensors(module, tensors)
    except RuntimeError as err:  # shape mismatch
        detail = str(err).strip().splitlines()[-1].strip()
        raise DataError(f"{path} does not match this model ({detail}); was it trained with another config?") from None
    if really_missing or unexpected:
        raise DataError(
            f"{path} does not match this model (missing {really_missing[:3]}, unexpected {list(unexpected)[:3]}); was it trained with another config?"
        )


def weights_path(source: str | Path) -> Path:
    """A run directory's model.safetensors, or the .safetensors file named."""
    source = Path(source)
    return source / "model.safetensors" if source.is_dir() else source


def load_matching_weights(module: torch.nn.Module, source: str | Path) -> tuple[list[str], list[str]]:
    """Start `module` from the tensors of `source` (a run directory or safetensors file)
    that match one of its own by name and shape: (loaded names, names left as they were,
    e.g. a head for another task). None matching is a DataError."""
    path = weights_path(source)
    tensors = read_tensors(path)
    current = module.state_dict()
    usable = {k: v for k, v in tensors.items() if k in current and current[k].shape == v.shape}
    if not usable:
        raise DataError(f"{path}: no tensor matches this model by name and shape; train.init takes a run of the same architecture")
    fresh, _ = assign_tensors(module, usable)
    return sorted(usable), fresh


# ---------------------------------------------------------------- the checkpoint journal

def write_checkpoint(run_dir: Path, model: torch.nn.Module, state_tensors: dict[str, torch.Tensor],
                     state_json: dict[str, Any]) -> None:
    """Commit model + training state atomically as one checkpoint."""
    run_dir = Path(run_dir)
    step = str(state_json.get("step", ""))
    save_file(unique_state(model), str(run_dir / "model.safetensors.tmp"), metadata={"step": step})
    save_file({k: v.contiguous() for k, v in state_tensors.items()}, str(run_dir / "state.safetensors.tmp"),
              metadata={"step": step})
    fsync_write(run_dir / "state.json.tmp", (json.dumps(state_json, indent=2, sort_keys=True) + "\n").encode())
    fsync_write(run_dir / MARKER, step.encode())
    finish_commit(run_dir)


def finish_commit(run_dir: Path) -> None:
    for name in CHECKPOINT_FILES:
        tmp = run_dir / (name + ".tmp")
        if tmp.exists():
            os.replace(tmp, run_dir / name)
    (run_dir / MARKER).unlink(missing_ok=True)


def recover(run_dir: str | Path) -> None:
    """Finish a checkpoint whose commit marker survived a kill; drop half-written ones."""
    run_dir = Path(run_dir)
    if (run_dir / MARKER).exists():
        finish_commit(run_dir)
    for name in CHECKPOINT_FILES:
        (run_dir / (name + ".tmp")).unlink(missing_ok=True)


def has_checkpoint(run_dir: str | Path) -> bool:
    """A committed checkpoint, or one whose commit marker survived a kill."""
    run_dir = Path(run_dir)
    return (run_dir / "state.json").exists() or (run_dir / MARKER).exists()


def read_checkpoint(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(state tensors, state.json) of the last committed checkpoint, or None."""
    run_dir = Path(run_dir)
    recover(run_dir)
    if not (run_dir / "state.json").exists():
        return None
    meta = read_json(run_dir / "state.json")
    return read_tensors(run_dir / "state.safetensors"), meta
