"""Shared by the study tests: a tiny task whose whole test split is one small batch, and a
record of a folder's files to show that a rerun left them untouched."""
from __future__ import annotations

import hashlib
from pathlib import Path

COPY = {"name": "copy", "length": 6, "symbols": 4, "num_train": 64, "num_val": 8, "num_test": 16}
TRAIN = {"steps": 10, "eval_every": 5, "batch_size": 16, "eval_batch_size": 16, "progress": False, "device": "cpu"}


def files(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[str, int]]:
    """relative path -> (SHA-256, mtime in ns) of every file under `folder` but those named in `skip`."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}


def without(row: dict, *keys: str) -> dict:
    return {k: v for k, v in row.items() if k not in keys}
