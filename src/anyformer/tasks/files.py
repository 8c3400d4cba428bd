"""Reading user files for the tasks: CSV tables, text in the file's encoding, numbers,
and package data.

Every error is a DataError of one line naming `file:line` (for a byte that does not decode,
its offset too), what is wrong and how to fix it. CSV files are read by pyarrow's columnar,
multi-threaded reader; whatever it refuses (a row of the wrong length, bytes that do not
decode, a blank header, a shape it might split differently) is read again by the csv module,
whose single pass knows every row's line, so every message names the line and the slow pass
is paid only by files that are about to fail (or are odd). pyarrow is imported when a CSV is
read, not when the tasks are registered: `anyformer list` need not load it.
(The cache of parsed tables is `anyformer.tasks.table_cache`.)
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import encodings.aliases
import gc
import importlib.util
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from anyformer.errors import ConfigError, DataError, suggest

if TYPE_CHECKING:
    import pyarrow as pa

csv.field_size_limit(1 << 30)  # text columns may hold whole documents

_CONVERSION = re.compile(r"In CSV column #(\d+): .*CSV conversion error to (?!string)")
BLOCK_SIZE = 1 << 20
_TYPE_RETRIES = 3
_WHITESPACE = "".join(c for c in map(chr, range(0x3000 + 1)) if c.isspace())  # what str.strip() strips  # re-reads, each turning one numeric-looking column to text, before reading all as text


class Unreadable(Exception):
    """pyarrow cannot read the file as asked; the caller reads it again with the csv module,
    which either reads it or raises the exact file:line error."""


def existing_file(path: str | Path, what: str, hint: str = "") -> Path:
    """`path` as a Path, or a DataError saying it is missing (and how to get it)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{what} {str(p)!r} does not exist{'; ' + hint if hint else ''}")
    return p


# -- encodings
def check_encoding(encoding: str, task: str) -> str:
    """The canonical codec name of `encoding` ('utf8' -> 'utf-8'), or a ConfigError naming it."""
    try:
        info = codecs.lookup(encoding)
    except (LookupError, TypeError):
        info = None
    if info is None or not getattr(info, "_is_text_encoding", True):  # rot13, base64: not text encodings
        names = sorted(set(encodings.aliases.aliases.values()))
        raise ConfigError(f"task {task!r}: unknown text encoding {encoding!r}{suggest(str(encoding), names)}; "
                          "give a Python codec name such as utf-8, latin-1, cp1252 or utf-16")
    return info.name


def python_codec(encoding: str) -> str:
    return "utf-8-sig" if encoding == "utf-8" else encoding  # a leading BOM (Excel writes one) is no text


def decode_error(path: Path, encoding: str, option: str | None = "task.encoding") -> DataError:
    """The first byte of `path` that does not decode: its line and byte offset, and the fix
    (`option` names the setting that changes the encoding, if the caller has one)."""
    raw = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if encoding == "utf-8" and raw.startswith(codecs.BOM_UTF8) else 0
    try:
        raw[skip:].decode("utf-8" if encoding == "utf-8" else encoding)
    except UnicodeDecodeError as err:
        start = skip + err.start
    else:  # the error came from elsewhere: say what is known
        return DataError(f"{path}: cannot be read as {encoding} text; save it as UTF-8")
    line = len(re.findall(r"\r\n|\r|\n", raw[:start].decode(encoding, "replace"))) + 1
    what = "UTF-8" if encoding == "utf-8" else f"valid {encoding}"
    if option is None:
        fix = "save the file as UTF-8"
    elif encoding == "utf-8":
        fix = f"save the file as UTF-8 or set {option}=latin-1"
    else:
        fix = f"set {option} to the file's encoding (latin-1 reads any bytes)"
    return DataError(f"{path}:{line}: byte 0x{raw[start]:02x} at offset {start} is not {what}; {fix}")


def text_lines(path: Path, encoding: str = "utf-8", option: str | None = "task.encoding") -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file, streamed; a byte that does not decode is a DataError
    naming its line and byte offset."""
    try:
        with path.open(encoding=python_codec(encoding)) as fh:
            yield from enumerate(fh, 1)
    except UnicodeDecodeError:
        raise decode_error(path, encoding, option) from None


# -- pyarrow's reader
def _arrow():
    import pyarrow as pa
    import pyarrow.csv as pacsv
    return pa, pacsv


def _read_options(encoding: str):
    pa, pacsv = _arrow()
    # utf8 is pyarrow's own (it skips a BOM); any other codec is transcoded through Python's.
    return pacsv.ReadOptions(encoding="utf8" if encoding == "utf-8" else encoding, block_size=BLOCK_SIZE)


def _convert_options(types: dict[str, Any] | None, null_values: list[str]):
    pa, pacsv = _arrow()
    # Text stays text: no booleans, no nulls in string columns (a label 'None' is a label).
    return pacsv.ConvertOptions(column_types=types, null_values=null_values, strings_can_be_null=False,
                                quoted_strings_can_be_null=False, true_values=[], false_values=[])


def _source(source: Path | bytes):
    pa, _ = _arrow()
    return pa.BufferReader(pa.py_buffer(source)) if isinstance(source, bytes) else str(source)


def csv_schema(source: Path | bytes, encoding: str = "utf-8", delimiter: str = ",",
               null_values: list[str] | None = None) -> tuple[list[str], list[pa.DataType]]:
    """The raw header names and the types pyarrow infers from the file's first block."""
    pa, pacsv = _arrow()
    try:
        reader = pacsv.open_csv(_source(source), read_options=_read_options(encoding),
                                parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                                convert_options=_convert_options(None, null_values or []))
    except (pa.ArrowException, UnicodeError) as err:
        raise Unreadable(str(err)) from None
    schema = reader.schema
    reader.close()
    return list(schema.names), list(schema.types)


def arrow_table(source: Path | bytes, types: dict[str, Any], encoding: str = "utf-8", delimiter: str = ",",
                null_values: list[str] | None = None) -> pa.Table:
    """The whole file as a pyarrow Table with the column `types` asked for (by raw header name).
    A column asked as a number that holds text further down is read again as text; anything
    else pyarrow refuses is Unreadable."""
    pa, pacsv = _arrow()
    types = dict(types)
    # A newline inside a value needs a quote around it; without any quote pyarrow may cut the
    # file into blocks at any newline, in parallel (~25% faster on the flow CSV of benchmarks/).
    newlines = not _ascii_compatible(encoding) or _has_quote(source)
    for attempt in range(_TYPE_RETRIES + 2):
        try:
            table = pacsv.read_csv(_source(source), read_options=_read_options(encoding),
                                   parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=newlines),
                                   convert_options=_convert_options(types, null_values or []))
        except pa.ArrowInvalid as err:
            found = _CONVERSION.search(str(err))
            if found is None or attempt > _TYPE_RETRIES:
                raise Unreadable(str(err)) from None
            if attempt == _TYPE_RETRIES:  # many columns turn to text part-way: read them all as text
                types = {name: pa.string() for name in types}
            else:
                name = _names_in(source, encoding, delimiter)[int(found[1])]
                types[name] = pa.string()
            continue
        except (pa.ArrowException, UnicodeError) as err:
            raise Unreadable(str(err)) from None
        return table
    raise Unreadable("column types keep changing")  # not reached: the last attempt reads text


def _has_quote(source: Path | bytes, chunk: int = 1 << 22) -> bool:
    if isinstance(source, bytes):
        return b'"' in source
    with open(source, "rb") as fh:  # in chunks: mapping the file would count it all as resident
        while block := fh.read(chunk):
            if b'"' in block:
                return True
    return False


def _names_in(source: Path | bytes, encoding: str, delimiter: str) -> list[str]:
    return csv_schema(source, encoding, delimiter)[0]


def record_lines(raw: bytes, delimiter: str = ",") -> np.ndarray | None:
    """The line (1-based) of each data row of a CSV, in pyarrow's row order (empty lines
    skipped, the first record the header), found from the bytes: a newline ends a record when
    an even number of quotes comes before it. A row's line is the one it ends on, as the csv
    module's `line_num` counts. None when that rule may not be the csv module's (a lone
    carriage return, a quote that neither opens nor closes a field): the caller then reads
    the file with the csv module."""
    buf = np.frombuffer(raw, dtype=np.uint8)
    n = len(buf)

    def at(index: np.ndarray, outside: int) -> np.ndarray:  # buf[index], `outside` past either end
        inside = (index >= 0) & (index < n)
        return np.where(inside, buf[np.clip(index, 0, max(n - 1, 0))] if n else outside, outside)

    newlines = np.flatnonzero(buf == 10)
    returns = np.flatnonzero(buf == 13)
    if len(returns) and not np.all(at(returns + 1, 0) == 10):
        return None
    quotes = np.flatnonzero(buf == 34)
    terminators = newlines
    if len(quotes):
        d = ord(delimiter)

        def ends(b: np.ndarray) -> np.ndarray:
            return (b == 10) | (b == 13) | (b == d)

        opens, closes = quotes[0::2], quotes[1::2]
        before, after = at(opens - 1, 10), at(closes + 1, 10)
        # an opening quote after the closing one just before it is an escaped quote ("")
        escaped = np.concatenate([[-2], closes])[:len(opens)] == opens - 1
        if len(quotes) % 2 or not (ends(before) | escaped).all() or not (ends(after) | (after == 34)).all():
            return None
        terminators = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
    starts = np.concatenate([[0], terminators + 1])
    stops = np.concatenate([terminators, [n]])
    length = stops - starts
    empty = (length == 0) | ((length == 1) & (at(starts, 0) == 13))
    lines = np.searchsorted(newlines, stops[~empty]) + 1
    return lines[1:]  # the first record is the header


def _ascii_compatible(encoding: str) -> bool:
    probe = '\n\r",;\t|abc'
    try:
        return probe.encode(encoding) == probe.encode("ascii")
    except (UnicodeError, LookupError):
        return False


def read_csv(path: str | Path, delimiter: str = ",", what: str = "CSV file", encoding: str = "utf-8",
             encoding_option: str | None = None) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields), ...]). Header names and fields are stripped of
    surrounding whitespace (network-flow CSVs write ' Destination Port'); blank lines are
    skipped; a row whose field count differs from the header's is an error. `encoding_option`
    names the task option a decode error should suggest (None: "save it as UTF-8")."""
    p = existing_file(path, what)
    if _ascii_compatible(encoding):
        try:
            return _read_csv_arrow(p, delimiter, encoding)
        except Unreadable:
            pass
    return _read_csv_rows(p, delimiter, encoding, encoding_option)


def _read_csv_arrow(p: Path, delimiter: str, encoding: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    pa, _ = _arrow()
    raw = p.read_bytes()
    names, _ = csv_schema(raw, encoding, delimiter)
    header = [n.strip() for n in names]
    if not any(header):  # the csv module skips blank rows above the header; pyarrow would not
        raise Unreadable("blank header row")
    table = arrow_table(raw, {n: pa.string() for n in names}, encoding, delimiter)
    lines = record_lines(raw, delimiter)
    if lines is None or len(lines) != table.num_rows:
        raise Unreadable("row lines unknown")
    del raw
    import pyarrow.compute as pc
    stripped = [pc.utf8_trim(c, characters=_WHITESPACE) for c in table.columns]
    blank = np.logical_and.reduce([pc.equal(c, "").to_numpy(zero_copy_only=False) for c in stripped])
    columns = [c.to_pylist() for c in stripped]
    with _no_gc():
        rows = [(line, list(fields)) for line, fields, skip in zip(lines.tolist(), zip(*columns), blank.tolist()) if not skip]
    return header, rows


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Build many small lists without the cyclic collector: its passes over the growing list
    of rows cost 3-4x the building itself (the rows hold strings only, no cycles)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_csv_rows(p: Path, delimiter: str, encoding: str, encoding_option: str | None) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The csv module's single pass: slower, but it knows each row's line."""
    try:
        with p.open(newline="", encoding=python_codec(encoding)) as fh:
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
    except UnicodeDecodeError:
        raise decode_error(p, encoding, encoding_option) from None
    except csv.Error as err:
        raise DataError(f"{p}:{reader.line_num}: cannot read it as CSV ({err}); fix that row") from None
    if header is None:
        raise DataError(f"{p}: the file is empty; it needs a header row and data rows")
    return header, rows


# -- columns and numbers
def is_number(value: str) -> bool:
    """Whether float() reads `value`."""
    try:
        float(value)
    except ValueError:
        return False
    return True


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
