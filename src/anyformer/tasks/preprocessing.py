"""What a run directory keeps of its task so that raw inputs can be turned into model
inputs later, anywhere: preprocessing.json (the task's fitted facts, and the data file's
SHA-256), split.safetensors (which records each split holds) and a copy of each file a
bundled option names (a tokenizer.json). Training writes them; predict reads them."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from anyformer import rundir
from anyformer.errors import ConfigError, DataError
from anyformer.tasks.base import Task
from anyformer.tasks.raw import file_digest

STATE = "preprocessing.json"
SPLIT = "split.safetensors"
VERSION = 1


def data_file(task: Task) -> Path | None:
    """The task's data when it is one file (a folder or generated data: None)."""
    source = task.data_source()
    path = Path(source).expanduser() if source else None
    return path if path is not None and path.is_file() else None


_DIGESTS: dict[tuple[str, int, int], str] = {}


def data_digest(path: Path) -> str:
    """The file's SHA-256, hashed once per (path, size, mtime): compare starts a run per model
    and seed on one file, which may be gigabytes."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(path)
    return _DIGESTS[key]


def bundled_name(option: str, value: str) -> str:
    return f"{option}{Path(value).suffix}"


def save(task: Task, run_dir: str | Path) -> None:
    """Write the task's preprocessing, its split and its bundled files into `run_dir`
    (the splits are built by now)."""
    run_dir = Path(run_dir)
    data = data_file(task)
    bundled = {}
    for option in task.bundled_options:
        value = getattr(task, option, None)
        if value and Path(str(value)).expanduser().is_file():
            name = bundled_name(option, str(value))
            source = Path(str(value)).expanduser().resolve()
            if source != (run_dir / name).resolve():
                shutil.copyfile(source, run_dir / name)
            bundled[option] = name
    rundir.atomic_write_json(run_dir / STATE, {
        "version": VERSION, "task": task.name, "state": task.preprocessing(), "bundled": bundled,
        "data": None if data is None else {"path": str(data.resolve()), "sha256": data_digest(data)},
    })
    indices = {name: idx.to(torch.int64).contiguous() for name, idx in task.split_indices().items()}
    tmp = run_dir / f".{SPLIT}.tmp"
    save_file(indices, str(tmp), metadata={"task": task.name})
    tmp.replace(run_dir / SPLIT)


def read(run_dir: str | Path) -> dict[str, Any]:
    """preprocessing.json of a run, or a one-line error saying what to do without it."""
    path = Path(run_dir) / STATE
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {STATE}: it was trained before runs saved their preprocessing (or was "
                          "imported, and trained on no task); train it again to predict on raw inputs")
    saved = rundir.read_json(path)
    if not isinstance(saved, dict) or saved.get("version") != VERSION or not isinstance(saved.get("state"), dict):
        raise DataError(f"{path}: not a preprocessing file this version of anyformer wrote; train the run again")
    return saved


def task_options(spec: dict[str, Any], saved: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """The run's task options with each bundled option pointing at the run's own copy."""
    spec = dict(spec)
    for option, name in (saved.get("bundled") or {}).items():
        spec[option] = str(Path(run_dir) / name)
    return spec


def split_indices(run_dir: str | Path) -> dict[str, torch.Tensor]:
    path = Path(run_dir) / SPLIT
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {SPLIT} (the records of each split); train the run again")
    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types on a damaged file
        raise DataError(f"{path}: unreadable ({str(err).splitlines()[0]}); train the run again") from None
