"""Raw inputs for `predict`: one record per text, table row, image or series, with where it
came from, and the readers of the files users bring (text lines, CSV, JSON lines, image
files, .npz / .npy arrays)."""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from anyformer.errors import DataError, suggest
from anyformer.tasks.files import existing_file, read_csv, text_lines

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
ARRAY_SUFFIXES = (".npz", ".npy")
PIXEL_MODES = ("1", "L", "LA", "RGB", "RGBA", "I", "I;16", "F")


@dataclass
class Raw:
    """One raw input: `value` (a text, a row {column: field}, an image array, a series
    [T, C]), `where` it came from (file:line, a file and index) for messages, and `label`,
    its label as the data spells it when the data gives one (the run's own files)."""

    value: Any
    where: str
    label: Any = None
    line: int | None = None  # the line of a text file it was read from


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks: a run records its data file's, so a split's
    indices are never applied to a file that changed."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def csv_records(path: Path, encoding: str = "utf-8", names: Callable[[list[str]], list[str]] | None = None) -> tuple[list[str], list[Raw]]:
    """(header, one Raw {column: field} per data row) of a CSV file, as `read_csv` reads it
    (names and fields stripped, blank rows skipped, a row of the wrong width an error naming
    its line); `names` renames the header first (tabular-csv makes repeated names unique)."""
    header, rows = read_csv(path, encoding=encoding, encoding_option="task.encoding")
    keys = header if names is None else names(header)
    return keys, [Raw(dict(zip(keys, fields)), f"{path}:{line}", line=line) for line, fields in rows]


def jsonl_records(path: Path, encoding: str = "utf-8") -> list[Raw]:
    """One Raw {key: value} per JSON object line; blank lines skipped."""
    rows = []
    for line, raw in text_lines(path, encoding):
        if not raw.strip():
            continue
        where = f"{path}:{line}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not valid JSON ({err.msg} at column {err.colno}); one JSON object per line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
        rows.append(Raw(obj, where, line=line))
    return rows


def field(row: Raw, key: str, option: str) -> Any:
    """row.value[key], or a DataError naming the row and the keys it has."""
    if key not in row.value:
        raise DataError(f"{row.where}: no column {key!r}{suggest(key, list(row.value))} (the run's {option}); "
                        f"it has: {', '.join(map(str, row.value))}")
    return row.value[key]


def text_records(path: str | Path, column: str, encoding: str = "utf-8") -> list[Raw]:
    """Texts to classify: a .csv's `column`, a .jsonl's `column` key, else every non-blank
    line of a text file."""
    path = existing_file(path, "input file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".jsonl"):
        rows = csv_records(path, encoding)[1] if suffix == ".csv" else jsonl_records(path, encoding)
        out = []
        for row in rows:
            text = field(row, column, "text_column")
            if not isinstance(text, (str, int, float)) or isinstance(text, bool):
                raise DataError(f"{row.where}: the text in {column!r} is not a string; give a string, or drop the row")
            out.append(Raw(str(text), row.where))
        return out
    return [Raw(line.rstrip("\r\n"), f"{path}:{n}") for n, line in text_lines(path, encoding) if line.strip()]


def image_records(path: str | Path) -> list[Raw]:
    """Images as arrays, one Raw each: an image file ([H, W] or [H, W, C] as Pillow reads
    it), or a batch of images in a .npy or in a .npz's `x` (as stored: [H, W], [H, W, C] or
    [C, H, W] each)."""
    path = existing_file(path, "input file")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        from PIL import Image, UnidentifiedImageError
        try:
            with Image.open(path) as img:
                # Palette and CMYK images hold indices or ink, not intensities: read their colours.
                array = np.asarray(img if img.mode in PIXEL_MODES else img.convert("RGBA" if "transparency" in img.info else "RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"{path}: not an image Pillow reads ({err}); give a PNG or JPEG file") from None
        return [Raw(array, str(path))]
    if suffix not in ARRAY_SUFFIXES:
        raise DataError(f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}) nor an array file (.npz with x, .npy); "
                        "give image files or arrays")
    if suffix == ".npz" and not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a NumPy .npz archive; save it with np.savez(path, x=images)")
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as data:
                array = data["x"]
    except KeyError:
        raise DataError(f"{path}: no array 'x' (the images); save it with np.savez(path, x=images)") from None
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable array of numbers ({str(err).splitlines()[0]}); "
                        "save plain numeric arrays, never Python objects") from None
    if array.ndim < 3:
        raise DataError(f"{path}: holds an array of shape {list(array.shape)}; an array file holds a batch of images "
                        "[N, H, W], [N, H, W, C] or [N, C, H, W]")
    return [Raw(a, f"{path} [image {i}]") for i, a in enumerate(array)]
