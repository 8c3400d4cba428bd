"""Reading user files for the tasks: CSV rows with their line numbers, numbers, package data.

Every error is a DataError of one line naming `file:line`, what is wrong and how to fix it.
The csv module is enough here (no pandas): the files are read once into memory.
"""
from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

from anyformer.errors import DataError, suggest

csv.field_size_limit(1 << 30)  # text columns may hold whole documents


def existing_file(path: str | Path, what: str, hint: str = "") -> Path:
    """`path` as a Path, or a DataError saying it is missing (and how to get it)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{what} {str(p)!r} does not exist{'; ' + hint if hint else ''}")
    return p


def read_csv(path: str | Path, delimiter: str = ",", what: str = "CSV file") -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields), ...]). Header names and fields are stripped of
    surrounding whitespace (network-flow CSVs write ' Destination Port'); blank lines are
    skipped; a row whose field count differs from the header's is an error."""
    p = existing_file(path, what)
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = None
            rows: list[tuple[int, list[str]]] = []
            for fields in reader:
                if not fields or all(not f.strip() for f in fields):
                    continue
                fields = [f.strip() for f in fields]
                if header is None:
                    header = fields
                    continue
                if len(fields) != len(header):
                    raise DataError(
                        f"{p}:{reader.line_num}: {len(fields)} fields, the header has {len(header)}; "
                        "fix the row (quote fields that contain the delimiter)"
                    )
                rows.append((reader.line_num, fields))
    except UnicodeDecodeError as err:
        raise DataError(f"{p}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    except csv.Error as err:
        raise DataError(f"{p}: cannot read it as CSV ({err})") from None
    if header is None:
        raise DataError(f"{p}: the file is empty; it needs a header row and data rows")
    return header, rows


def column_index(header: list[str], name: str, path: str | Path, option: str) -> int:
    """Position of column `name`, or a DataError naming the closest and all columns."""
    if name not in header:
        raise DataError(
            f"{path}: no column {name!r}{suggest(name, header)}; set {option} to one of: {', '.join(header)}"
        )
    return header.index(name)


def parse_number(value: str, path: str | Path, line: int, column: str, finite: bool = True) -> float:
    """float(value), accepting 'inf'/'Infinity'/'NaN' spellings when `finite` is False."""
    try:
        x = float(value)
    except ValueError:
        raise DataError(
            f"{path}:{line}: column {column!r} holds {value!r}, not a number; fix the value or drop the column"
        ) from None
    if finite and not math.isfinite(x):
        raise DataError(f"{path}:{line}: column {column!r} holds {value!r}, not a finite number; fill or drop that row")
    return x


def package_data(package: str, *parts: str, extra: str) -> Path:
    """A data file shipped inside an installed package, found WITHOUT importing it (aeon and
    statsmodels pull in numba/pandas at import; only their files are needed here)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"package {package!r} is not installed; `pip install {extra}` (or `pip install 'anyformer[data]'`) to use its data, or pass a local file"
        )
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise DataError(f"{package} {spec.origin and Path(spec.origin).parent} ships no {'/'.join(parts)}; upgrade it or pass a local file")
    return path
