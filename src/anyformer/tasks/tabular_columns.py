"""The columns of a user table as the tabular-csv task reads them: numbers while every value
is one, else category codes; missing-value spellings; the cache entry form of a parsed table."""
from __future__ import annotations

import itertools
import json
import math
from array import array
from dataclasses import dataclass

import numpy as np

from anyformer.errors import DataError

MISSING = {"", "nan", "na", "n/a", "null", "none", "?"}
# pyarrow matches null spellings exactly, so it is given every upper/lower-case spelling.
NULLS = sorted({"".join(p) for m in MISSING for p in itertools.product(*({c.lower(), c.upper()} for c in m))})


def unique_names(header: list[str]) -> list[str]:
    """Header names made unique as pandas does ('x', 'x.1'): CIC-IDS repeats a column."""
    seen: dict[str, int] = {}
    out = []
    for name in header:
        if name in seen:
            seen[name] += 1
            out.append(f"{name}.{seen[name]}")
        else:
            seen[name] = 0
            out.append(name)
    return out


def parse_value(value: str) -> float | None:
    """float of a numeric field ('Infinity' and 'NaN' included), NaN when missing, None if text."""
    if value.lower() in MISSING:
        return math.nan
    try:
        return float(value)
    except ValueError:
        return None


class Column:
    """One column read in a single pass: floats while every value is a number, else codes."""

    def __init__(self, forced: str | None) -> None:
        self.forced = forced
        self.numbers: array | None = None if forced == "categorical" else array("d")
        self.codes: array | None = array("i") if forced == "categorical" else None
        self.values: dict[str, int] = {}

    def code(self, value: str) -> int:
        # One spelling per number ('1', '1.0' -> '1.0'), so a column that turns categorical
        # part-way codes its earlier numbers and later text consistently.
        x = parse_value(value)
        return self.values.setdefault(value if x is None else repr(x), len(self.values))

    def add(self, value: str, where: str, name: str) -> None:
        if self.numbers is not None:
            x = parse_value(value)
            if x is not None:
                self.numbers.append(x)
                return
            if self.forced == "numeric":
                raise DataError(f"{where}: column {name!r} holds {value!r}, not a number; fix it or drop {name!r} from `numeric`")
            # First text value: the column is categorical after all; recode what came before.
            self.codes = array("i", (self.code(repr(v)) for v in self.numbers))
            self.numbers = None
        self.codes.append(self.code(value))

    @classmethod
    def of_numbers(cls, numbers: np.ndarray) -> "Column":
        col = cls(None)
        col.numbers = numbers
        return col

    @classmethod
    def of_codes(cls, codes: np.ndarray, values: dict[str, int]) -> "Column":
        col = cls("categorical")
        col.codes, col.values = codes, values
        return col


@dataclass(eq=False)
class Labels:
    """The target column: each row's index into `values`, its distinct spellings (stripped)
    in order of first appearance. Kept as codes: a list of one string per row cost more
    than the rest of a 200k-row load after parsing."""

    codes: np.ndarray  # int32 [n]
    values: list[str]

    @classmethod
    def of(cls, codes: np.ndarray, spellings: list[str]) -> "Labels":
        """From codes into raw spellings, merging those equal once stripped (' DoS', 'DoS')."""
        values: dict[str, int] = {}
        remap = np.fromiter((values.setdefault(v.strip(), len(values)) for v in spellings), dtype=np.int32, count=len(spellings))
        return cls(remap[codes] if len(values) < len(spellings) else codes.astype(np.int32, copy=False), list(values))

    def __len__(self) -> int:
        return len(self.codes)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Labels) and self.values == other.values
                and np.array_equal(self.codes, other.codes))

    def tolist(self) -> list[str]:
        return np.asarray(self.values, dtype=object)[self.codes].tolist()


def float_column(column) -> np.ndarray:
    """A float64 pyarrow column as one numpy array, its nulls (the MISSING spellings) NaN
    (a float array's nulls convert to NaN; 4x faster than fill_null and then converting)."""
    return column.combine_chunks().to_numpy(zero_copy_only=False)


def dictionary(column) -> tuple[np.ndarray, list[str]]:
    """(each row's index into the distinct values, the distinct values in order of first appearance)."""
    import pyarrow.compute as pc
    encoded = pc.dictionary_encode(column.combine_chunks())
    return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary.to_pylist()


def text_column(indices: np.ndarray, distinct: list[str], forced: str | None) -> Column | None:
    """A text column decided on its distinct values, as Column.add decides row by row:
    numbers when each is one (unless forced categorical), else codes in order of first
    appearance; None for a forced-numeric column holding text (the row pass names the row)."""
    keys, numbers = [], []
    for value in distinct:
        value = value.strip()
        x = parse_value(value)
        numbers.append(x)
        keys.append(value if x is None else repr(x))
    if forced != "categorical" and all(x is not None for x in numbers):
        return Column.of_numbers(np.asarray(numbers, dtype=np.float64)[indices])
    if forced == "numeric":
        return None
    values: dict[str, int] = {}
    code_of = np.fromiter((values.setdefault(k, len(values)) for k in keys), dtype=np.int32, count=len(keys))
    return Column.of_codes(code_of[indices], values)


def to_cache_arrays(columns: dict[str, Column], labels: Labels, n: int) -> dict[str, np.ndarray]:
    """The reading pass as numpy arrays and one JSON string (names, category and label spellings)."""
    vocab = labels.values
    arrays = {"labels": np.asarray(labels.codes, dtype=np.int32)}
    meta = []
    for k, (name, col) in enumerate(columns.items()):
        if col.numbers is not None:
            arrays[f"x{k}"] = np.frombuffer(col.numbers, dtype=np.float64)
            meta.append([name, None])
        else:
            arrays[f"x{k}"] = np.frombuffer(col.codes, dtype=np.int32)
            meta.append([name, list(col.values)])
    arrays["meta"] = np.array(json.dumps({"n": n, "labels": vocab, "columns": meta}))
    return arrays


def from_cache_arrays(arrays: dict[str, np.ndarray]) -> tuple[dict[str, Column], Labels, int] | None:
    """The reading pass back from `to_cache_arrays`'s arrays, or None when they do not fit together."""
    try:
        meta = json.loads(str(arrays["meta"]))
        n, vocab = int(meta["n"]), list(meta["labels"])
        codes = arrays["labels"]
        if codes.shape != (n,) or codes.dtype != np.int32 or n == 0 or codes.min() < 0 or codes.max() >= len(vocab):
            return None
        columns = {}
        for k, (name, keys) in enumerate(meta["columns"]):
            x = arrays[f"x{k}"]
            if x.shape != (n,):
                return None
            if keys is None and x.dtype == np.float64:
                columns[name] = Column.of_numbers(x)
            elif keys is not None and x.dtype == np.int32 and 0 <= x.min() and x.max() < len(keys):
                columns[name] = Column.of_codes(x, {str(v): i for i, v in enumerate(keys)})
            else:
                return None
    except (KeyError, ValueError, TypeError):
        return None
    return columns, Labels(codes, vocab), n
