"""Hugging Face checkpoint directories on disk: config.json plus safetensors weights (one
`model.safetensors`, or shards listed by `model.safetensors.index.json`), read and written
with the safetensors library and json alone (transformers is not needed).

Pickled weights (`pytorch_model.bin`, `*.pt`, ...) are refused by their file names, never
opened: unpickling runs arbitrary code. The error says how to convert them."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from anyformer import rundir
from anyformer.errors import DataError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
# Suffixes of pickle-based weight files (torch.save, PyTorch Lightning, raw pickles).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def convert_hint(path: Path) -> str:
    """The one command that rewrites a pickle checkpoint as safetensors, in place."""
    return ('python -c "from transformers import AutoModel; '
            f"AutoModel.from_pretrained('{path}').save_pretrained('{path}', safe_serialization=True)\"")


def read_config(path: str | Path) -> dict[str, Any]:
    """A checkpoint directory's config.json (a DataError naming what is missing)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path} is not a directory; pass a local Hugging Face checkpoint folder (config.json + model.safetensors)")
    if not (path / CONFIG).is_file():
        raise DataError(f"{path} has no config.json; pass a Hugging Face checkpoint folder as save_pretrained writes it")
    config = rundir.read_json(path / CONFIG)
    if not isinstance(config, dict) or "model_type" not in config:
        raise DataError(f"{path / CONFIG} names no model_type; is it a transformers config?")
    return config


def weight_files(path: Path) -> list[Path]:
    """The safetensors files holding the weights, in shard order; pickles are refused unread."""
    if (path / WEIGHTS).is_file():
        return [path / WEIGHTS]
    if (path / INDEX).is_file():
        index = rundir.read_json(path / INDEX)
        shards = sorted(set((index.get("weight_map") or {}).values())) if isinstance(index, dict) else []
        if not shards:
            raise DataError(f"{path / INDEX} lists no weight files (its weight_map is empty)")
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise DataError(f"{path / INDEX} lists {missing[0]}, which is not in {path}; copy every shard")
        bad = [s for s in shards if not s.endswith(".safetensors")]
        if bad:
            raise DataError(f"{path / INDEX} lists {bad[0]}, not a safetensors file; anyformer reads safetensors only")
        return [path / s for s in shards]
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise DataError(f"{path} holds only pickled weights ({pickles[0]}), which anyformer never loads (unpickling runs code); "
                        f"convert them to safetensors first: {convert_hint(path)}")
    raise DataError(f"{path} has no {WEIGHTS} (nor {INDEX}); save the model with save_pretrained(DIR, safe_serialization=True)")


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json, every tensor) of a local checkpoint directory."""
    path = Path(path)
    config = read_config(path)
    tensors: dict[str, torch.Tensor] = {}
    for file in weight_files(path):
        tensors.update(rundir.read_tensors(file))  # a DataError for a damaged or foreign file
    return config, tensors


def sentence_pooling(path: str | Path) -> dict[str, Any]:
    """A sentence-transformers folder's pooling, as options of head 'features' ({} when
    the folder is a plain transformers checkpoint): `pool` 'mean' or 'first' ([CLS]) from
    1_Pooling/config.json, `normalize` when modules.json lists a Normalize module."""
    path = Path(path)
    if not (path / "modules.json").is_file():
        return {}
    modules = rundir.read_json(path / "modules.json")
    if not isinstance(modules, list):
        return {}
    found: dict[str, Any] = {}
    for module in modules:
        kind = str(module.get("type", "")) if isinstance(module, dict) else ""
        if kind.endswith(".Pooling") and (path / module.get("path", "") / CONFIG).is_file():
            pooling = rundir.read_json(path / module["path"] / CONFIG)
            # Only the modes with an exact equivalent; max or sqrt-length pooling keeps the tokens.
            if pooling.get("pooling_mode_mean_tokens") and not any(
                    pooling.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")):
                found["pool"] = "mean"
            elif pooling.get("pooling_mode_cls_token") and not pooling.get("pooling_mode_mean_tokens"):
                found["pool"] = "first"
        elif kind.endswith(".Normalize") and "pool" in found:
            found["normalize"] = True
    return found


def write_checkpoint(out: str | Path, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write config.json + model.safetensors (float32, metadata format 'pt', which
    transformers' loader expects) to `out`, each file atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Own contiguous CPU copies: safetensors refuses tensors that share memory (views, ties).
    clean = {k: v.detach().to("cpu", torch.float32).clone().contiguous() for k, v in tensors.items()}
    tmp = out / (WEIGHTS + ".tmp")
    save_file(clean, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / WEIGHTS)
    rundir.atomic_write_text(out / CONFIG, json.dumps(rundir.jsonable(config), indent=2, sort_keys=True) + "\n")
    return out
