"""A cache of what a task parsed from a large user file, as numpy arrays in an .npz file
(written with np.savez, read with allow_pickle=False: never a pickle) under the user cache
directory, `$ANYFORMER_CACHE_DIR/<kind>/` or `$XDG_CACHE_HOME/anyformer/<kind>/`
(`~/.cache/...`); `ANYFORMER_CACHE_DIR=off` turns it off. An entry is keyed by the file's
absolute path and the reader's options, and holds the file's size and mtime_ns: a changed file
misses and its entry is rewritten. Entries are written to a temporary name and renamed; an
unreadable, stale or corrupt entry is ignored (and rewritten), a cache that cannot be written
is only slower.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "ANYFORMER_CACHE_DIR"
CACHE_MIN_BYTES = 1 << 20  # parsing a smaller file takes milliseconds: not worth an entry
CACHE_VERSION = 1


def cache_dir(kind: str) -> Path | None:
    """Where entries of `kind` live, or None when the cache is off."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() == "off":
        return None
    root = Path(env).expanduser() if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "anyformer"
    return root / kind


def _entry(kind: str, path: Path, options: dict[str, Any]) -> tuple[Path, str] | None:
    folder = cache_dir(kind)
    if folder is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    if st.st_size < CACHE_MIN_BYTES:
        return None
    where = json.dumps({"kind": kind, "path": str(path.resolve()), "options": options}, sort_keys=True)
    key = json.dumps({"where": where, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "version": CACHE_VERSION}, sort_keys=True)
    return folder / (hashlib.sha256(where.encode()).hexdigest()[:32] + ".npz"), key


def cached_arrays(kind: str, path: Path, options: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The arrays saved for this file and these options, or None (off, missing, stale, corrupt)."""
    entry = _entry(kind, path, options)
    if entry is None or not entry[0].is_file():
        return None
    try:
        with np.load(entry[0], allow_pickle=False) as z:
            if str(z["__key__"]) != entry[1]:
                return None
            return {name: z[name] for name in z.files if name != "__key__"}
    except Exception:  # a corrupt entry (truncated zip, bad header, ...) is a miss, never an error
        return None


def cache_arrays(kind: str, path: Path, options: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Save `arrays` (numeric or fixed-width unicode: never objects) for this file and options."""
    entry = _entry(kind, path, options)
    if entry is None:
        return
    if any(a.dtype.kind not in "biufU" for a in arrays.values()):
        raise TypeError("the table cache stores numbers and fixed-width strings only")
    target, key = entry
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, __key__=np.array(key), **arrays)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return  # a read-only or full cache directory only makes the next load slower
