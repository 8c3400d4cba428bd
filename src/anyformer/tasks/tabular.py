"""Tabular classification from the user's CSV: numeric and categorical columns, one target."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from anyformer.errors import ConfigError, DataError, suggest
from anyformer.registry import register
from anyformer.tasks.base import Split, Task, require_classes
from anyformer.tasks.files import (Unreadable, arrow_table, check_encoding, csv_schema, decode_error, existing_file,
                                   python_codec, record_lines)
from anyformer.tasks.raw import Raw
from anyformer.tasks.table_cache import cache_arrays, cached_arrays
from anyformer.tasks.splits import stratified_split
from anyformer.tasks.tabular_columns import (NULLS, Column, Labels, dictionary, float_column, from_cache_arrays, parse_value,
                                             text_column, to_cache_arrays, unique_names)
from anyformer.tasks.tabular_predict import (categorical_features, input_rows, numeric_features, spelled_row,
                                             spelling, table_rows)

# Target spellings that are a missing value, not a class: 'nan' (pandas' astype(str) of a
# NaN), 'null', '?' (the UCI archive's). 'NA', 'N/A' and 'None' stay classes ('not
# applicable', 'no attack'): a label spelled like a missing feature value is still a label.
MISSING_TARGET = {"nan", "null", "?"}
READER = "tabular-csv/1"  # bump when what the reading pass returns changes: cache entries of older readers miss


@register("task", "tabular-csv")
class TabularCSVTask(Task):
    """Classify rows of a CSV by its `target` column (FT-Transformer inputs). A column is
    numeric when every value parses as a number ('Infinity', 'NaN' and blanks allowed),
    else categorical; `categorical` / `numeric` override, `drop` ignores columns. Numbers are
    z-scored with TRAIN mean/std, and missing or infinite values become the train mean (0); a
    column with no finite value at all is refused (`drop` it). The target must have at least
    two classes and no missing value (blank, 'NaN', 'null', '?');
    categories are coded on the train split, 1..k, with 0 for values the train split never
    saw. Headers are stripped of spaces and repeated names made unique ('x.1'), so network-
    flow CSVs (UNSW-NB15, CIC-IDS) load as they are. Split: stratified seeded fractions.
    The file is read in `encoding` by pyarrow's columnar reader (the csv module's row pass
    when a row needs naming); what a large file parses to is cached (anyformer.tasks.files)."""

    argument_option = "path"
    file_options = ("path",)
    raw_input = "table"

    problem = "classification"
    modality = "tabular"
    paper = "Revisiting Deep Learning Models for Tabular Data (Gorishniy et al. 2021)"

    def __init__(
        self,
        path: Annotated[str, Field(description="the CSV file (a header row, then one row per example)")],
        target: Annotated[str, Field(description="column holding the class to predict")] = "label",
        categorical: Annotated[list[str] | None, Field(description="columns to read as categories even if they hold numbers")] = None,
        numeric: Annotated[list[str] | None, Field(description="columns that must be numbers (a text value is an error)")] = None,
        drop: Annotated[list[str] | None, Field(description="columns to ignore (ids, timestamps, leaked labels)")] = None,
        val_fraction: Annotated[float, Field(description="share of rows held out for val (stratified)")] = 0.1,
        test_fraction: Annotated[float, Field(description="share of rows held out for test (stratified)")] = 0.2,
        split_seed: Annotated[int, Field(description="seed of the stratified split")] = 0,
        encoding: Annotated[str, Field(description="the file's text encoding, a Python codec name (utf-8, latin-1, cp1252, ...)")] = "utf-8",
    ) -> None:
        super().__init__()
        self.encoding = check_encoding(encoding, "tabular-csv")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ConfigError("task 'tabular-csv': val_fraction and test_fraction must be in (0, 1) with a sum below 1")
        self.path, self.target = path, target
        self.categorical, self.numeric, self.drop = list(categorical or []), list(numeric or []), list(drop or [])
        overlap = set(self.categorical) & set(self.numeric)
        if overlap:
            raise ConfigError(f"task 'tabular-csv': columns {sorted(overlap)} are listed as both categorical and numeric")
        self.fractions = [1 - val_fraction - test_fraction, val_fraction, test_fraction]
        self.split_seed = split_seed
        self.classes: list[str] = []
        self.numeric_columns: list[str] = []
        self.categorical_columns: list[str] = []
        self.cardinalities: list[int] = []
        # What predict needs to turn rows into the same tensors: each numeric column's train
        # (mean, std), each categorical column's {value: code}, and the split's row indices.
        self._stats: list[tuple[float, float]] = []
        self._codes: list[dict[str, int]] = []

    @staticmethod
    def write_example(folder, n: int = 60) -> dict[str, Any]:
        path = f"{folder}/flows.csv"
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow([" Flow Duration", " proto", "Bytes/s", " Label"])
            for i in range(n):
                w.writerow([i * 3, ["tcp", "udp"][i % 2], "Infinity" if i == 5 else i / 7, ["BENIGN", "DoS"][i % 3 == 0]])
        return {"path": path, "target": "Label"}

    def _read(self) -> tuple[dict[str, Column], Labels, int]:
        """(feature columns, the target's labels, rows): from the cache, else pyarrow's
        columnar read, else the csv module's row pass (which names the line of what is wrong)."""
        path = existing_file(self.path, "tabular CSV")
        options = self._cache_options()
        cached = cached_arrays("tables", path, options)
        read = None if cached is None else from_cache_arrays(cached)
        if read is not None:
            return read
        try:
            read = self._read_arrow(path)
        except Unreadable:
            read = self._read_rows(path)
        cache_arrays("tables", path, options, to_cache_arrays(*read))
        return read

    def _cache_options(self) -> dict[str, Any]:
        """Everything the reading pass depends on besides the file: a cache entry's key."""
        return {"reader": READER, "target": self.target, "categorical": sorted(self.categorical),
                "numeric": sorted(self.numeric), "drop": sorted(self.drop), "encoding": self.encoding}

    def _layout(self, path: Path, names: list[str]) -> tuple[list[tuple[int, str]], int]:
        """(the feature columns kept, as (position, name); the target's position)."""
        for option, wanted in (("target", [self.target]), ("categorical", self.categorical),
                               ("numeric", self.numeric), ("drop", self.drop)):
            for name in wanted:
                if name not in names:
                    raise DataError(f"{path}: no column {name!r}{suggest(name, names)} (option {option}); columns: {', '.join(names)}")
        keep = [(i, n) for i, n in enumerate(names) if n not in self.drop and n != self.target]
        if not keep:
            raise DataError(f"{path}: no feature columns besides the target; drop fewer columns")
        return keep, names.index(self.target)

    def _forced(self, name: str) -> str | None:
        return "categorical" if name in self.categorical else "numeric" if name in self.numeric else None

    def _read_arrow(self, path: Path) -> tuple[dict[str, Column], Labels, int]:
        """pyarrow's read: columns that look numeric in the first block are parsed as float64
        (the MISSING spellings null), the rest as text decided on its distinct values.
        Unreadable for whatever only the row pass can name or skip: a bad row or byte, a blank
        target (a blank row, or an empty target), text in a `numeric` column."""
        import pyarrow as pa
        import pyarrow.compute as pc

        spelled, inferred = csv_schema(path, self.encoding, null_values=NULLS)
        names = unique_names([h.strip() for h in spelled])
        if not any(names):  # a blank row above the header, which the row pass skips
            raise Unreadable("blank header row")
        keep, t = self._layout(path, names)
        types: dict[str, Any] = {}
        for name, raw, kind in zip(names, spelled, inferred):
            number = (name != self.target and name not in self.drop and name not in self.categorical
                      and (name in self.numeric or pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)))
            want = pa.float64() if number else pa.string()
            types[raw] = want if types.get(raw, want) == want else pa.string()  # a repeated name: one type
        table = arrow_table(path, types, self.encoding, null_values=NULLS)
        # pyarrow reads '-nan' and 'nan(1)' as NaN where float() says text or NaN: let float() decide.
        odd = [spelled[i] for i, _ in keep if pa.types.is_floating(table.schema.types[i])
               and pc.any(pc.is_nan(table.column(i))).as_py()]
        if odd:
            types = {**dict(zip(spelled, table.schema.types)), **{raw: pa.string() for raw in odd}}
            table = arrow_table(path, types, self.encoding, null_values=NULLS)
        n = table.num_rows
        if n == 0:
            raise DataError(f"{path}: no data rows below the header")
        arrays = table.columns
        del table  # each column's memory goes as soon as it is converted
        labels = Labels.of(*dictionary(arrays[t]))
        if not all(labels.values):
            raise Unreadable("a blank target")
        columns: dict[str, Column] = {}
        for i, name in keep:
            column, arrays[i] = arrays[i], None
            if pa.types.is_floating(column.type):
                columns[name] = Column.of_numbers(float_column(column))
                continue
            col = text_column(*dictionary(column), self._forced(name))
            if col is None:
                raise Unreadable(f"text in numeric column {name!r}")
            columns[name] = col
        pa.default_memory_pool().release_unused()  # pyarrow's allocator keeps freed pages; the split tensors need them next
        return columns, labels, n

    def _read_rows(self, path: Path) -> tuple[dict[str, Column], Labels, int]:
        """The csv module's single pass over the rows, for files pyarrow refuses: it skips
        blank rows and names the line (and byte offset) of what is wrong."""
        try:
            with path.open(newline="", encoding=python_codec(self.encoding)) as fh:
                reader = csv.reader(fh)
                header = next((r for r in reader if any(f.strip() for f in r)), None)
                if header is None:
                    raise DataError(f"{path}: the file is empty; it needs a header row and data rows")
                names = unique_names([h.strip() for h in header])
                keep, t = self._layout(path, names)
                columns = {n: Column(self._forced(n)) for _, n in keep}
                labels: list[str] = []  # made Labels once read
                for fields in reader:
                    if not fields or all(not f.strip() for f in fields):
                        continue
                    where = f"{path}:{reader.line_num}"
                    if len(fields) != len(names):
                        raise DataError(f"{where}: {len(fields)} fields, the header has {len(names)}; fix the row (quote fields that contain commas)")
                    label = fields[t].strip()
                    if not label:
                        raise DataError(f"{where}: empty target {self.target!r}; fill it or drop the row")
                    labels.append(label)
                    for i, n in keep:
                        columns[n].add(fields[i].strip(), where, n)
        except UnicodeDecodeError:
            raise decode_error(path, self.encoding) from None
        except csv.Error as err:
            raise DataError(f"{path}:{reader.line_num}: cannot read it as CSV ({err}); fix that row") from None
        if not labels:
            raise DataError(f"{path}: no data rows below the header")
        values: dict[str, int] = {}
        codes = np.fromiter((values.setdefault(v, len(values)) for v in labels), dtype=np.int32, count=len(labels))
        return columns, Labels(codes, list(values)), len(labels)

    def _missing_target(self, labels: Labels) -> None:
        """Refuse a target that is missing (MISSING_TARGET: 'NaN', 'null', '?') in some row:
        such a row is no example of any class. Its line is found again from the file's bytes, only on this
        error path (the reading pass keeps no line numbers)."""
        absent = [k for k, v in enumerate(labels.values) if v.lower() in MISSING_TARGET]
        if not absent:
            return
        missing = np.flatnonzero(np.isin(labels.codes, absent))
        path = Path(self.path).expanduser()
        first_value = labels.values[int(labels.codes[missing[0]])]
        if len(missing) == len(labels):
            raise DataError(f"{path}: the target column {self.target!r} holds no values (every row is {first_value!r}); "
                            "set target to the column holding the classes")
        lines = record_lines(path.read_bytes())
        first = (f"{path}:{int(lines[missing[0]])}" if lines is not None and len(lines) == len(labels)
                 else f"{path}: data row {missing[0] + 1}")
        raise DataError(f"{first}: the target {self.target!r} is missing ({first_value!r}; {len(missing)} rows in all); "
                        "fill those rows' target or drop them")

    def _normalised(self, columns: dict[str, Column], train: np.ndarray) -> np.ndarray:
        """The numeric columns z-scored with their TRAIN mean and (population) std over finite
        values, missing and infinite values 0 (the train mean), as one float32 [n, k] array.
        Column by column, each parsed column freed once written: no float64 copy of the
        whole table (np.stack of them was the largest allocation of a load). A column with
        no finite value anywhere is refused (it is no feature; `drop` it); one with none in
        the train split is centred on 0 with std 1; a constant one stays 0."""
        x = np.empty((len(train), 0), dtype=np.float32)
        self._stats = []
        for j, name in enumerate(self.numeric_columns):
            col = np.frombuffer(columns[name].numbers, dtype=np.float64)
            if j == 0:
                x = np.empty((len(col), len(self.numeric_columns)), dtype=np.float32, order="F")
            finite = np.isfinite(col)
            if not finite.any():
                raise DataError(f"{Path(self.path).expanduser()}: column {name!r} holds no numbers (every value is missing or infinite); "
                                f"fill it or drop it (--set task.drop={json.dumps([name])})")
            fit = col[train]
            fit = fit[np.isfinite(fit)]
            mean = fit.mean() if len(fit) else 0.0
            std = np.sqrt(np.square(fit - mean).mean()) if len(fit) else 1.0
            self._stats.append((float(mean), float(std)))
            z = col - mean
            z /= std if std > 0 else 1.0
            z[~finite] = 0.0
            x[:, j] = z
            columns[name] = None  # its memory goes now; the rest of the load needs it
        return x

    def build_splits(self) -> dict[str, Split]:
        columns, labels, n = self._read()
        self._missing_target(labels)
        def order(c: str) -> tuple:  # numeric class names in numeric order
            x = parse_value(c)
            return (0, x, "") if x is not None and not math.isnan(x) else (1, 0.0, c)
        self.classes = sorted(labels.values, key=order)
        require_classes(self.classes, str(Path(self.path).expanduser()), f"the target column {self.target!r}")
        rank = np.empty(len(self.classes), dtype=np.int64)
        position = {v: i for i, v in enumerate(labels.values)}
        rank[[position[c] for c in self.classes]] = np.arange(len(self.classes))
        y = torch.from_numpy(rank[labels.codes])
        parts = stratified_split(y, self.fractions, self.split_seed)
        train = parts[0].numpy()
        self._parts = dict(zip(("train", "val", "test"), parts))
        self.numeric_columns = [c for c, col in columns.items() if col.numbers is not None]
        self.categorical_columns = [c for c, col in columns.items() if col.numbers is None]
        inputs: dict[str, np.ndarray] = {}
        if self.numeric_columns:
            inputs["numeric"] = self._normalised(columns, train)
        if self.categorical_columns:
            codes, self.cardinalities, self._codes = [], [], []
            for c in self.categorical_columns:
                raw = np.frombuffer(columns[c].codes, dtype=np.int32)
                seen = np.unique(raw[train])
                remap = np.zeros(len(columns[c].values), dtype=np.int64)  # 0: unseen in train
                remap[seen] = np.arange(1, len(seen) + 1)
                codes.append(remap[raw])
                # Every value of the file, those only val/test hold too (code 0): predict knows them.
                self._codes.append({k: int(remap[v]) for k, v in columns[c].values.items()})
                self.cardinalities.append(len(seen) + 1)
            inputs["categorical"] = np.stack(codes, 1)
        # Each split gathered once, row-major, from the column-major arrays.
        return {name: Split({k: torch.from_numpy(np.ascontiguousarray(v[idx.numpy()])) for k, v in inputs.items()}, y[idx])
                for name, idx in zip(("train", "val", "test"), parts)}

    def model_defaults(self) -> dict[str, Any]:
        self.splits()
        tokens = len(self.numeric_columns) + len(self.categorical_columns) + 1
        return {"encoder": {"name": "tabular", "num_numeric": len(self.numeric_columns), "categories": self.cardinalities},
                "head": {"name": "cls", "num_classes": len(self.classes)}, "max_len": tokens}

    def required_options(self) -> dict[str, dict[str, Any]]:
        self.splits()
        return {"encoder": {"num_numeric": len(self.numeric_columns), "categories": self.cardinalities},
                "head": {"num_classes": len(self.classes), "multi_label": False}}

    # -- predict: the columns, train statistics, category codes and classes the run trained with
    def preprocessing(self) -> dict[str, Any]:
        self.splits()
        return {"target": self.target, "classes": self.classes, "cardinalities": self.cardinalities,
                "numeric": [{"name": n, "mean": m, "std": s} for n, (m, s) in zip(self.numeric_columns, self._stats)],
                "categorical": [{"name": n, "codes": c} for n, c in zip(self.categorical_columns, self._codes)]}

    def restore(self, state: dict[str, Any]) -> None:
        self.target, self.classes = str(state["target"]), [str(c) for c in state["classes"]]
        self.cardinalities = [int(k) for k in state["cardinalities"]]
        self.numeric_columns = [str(c["name"]) for c in state["numeric"]]
        # A non-finite statistic was saved as null: NaN keeps `std > 0` false, as it was.
        self._stats = [(math.nan if c["mean"] is None else float(c["mean"]), math.nan if c["std"] is None else float(c["std"]))
                       for c in state["numeric"]]
        self.categorical_columns = [str(c["name"]) for c in state["categorical"]]
        self._codes = [{str(k): int(v) for k, v in c["codes"].items()} for c in state["categorical"]]

    def records(self) -> list[Raw]:
        """Every data row of the file, in the order the training read counts them."""
        rows = table_rows(existing_file(self.path, "tabular CSV"), self.encoding)
        return [Raw(r.value, r.where, r.value.get(self.target)) for r in rows]

    def read_inputs(self, path: Path) -> list[Raw]:
        return input_rows(path, self.encoding)

    def encode(self, records: list[Raw]) -> tuple[dict[str, torch.Tensor], None]:
        """{'numeric': float32 [N, k], 'categorical': int64 [N, c]} (those the run has) of rows."""
        rows, where = [spelled_row(r) for r in records], [r.where for r in records]
        every = self.numeric_columns + self.categorical_columns
        inputs = {}
        if self.numeric_columns:
            inputs["numeric"] = numeric_features(rows, where, self.numeric_columns, self._stats, every)
        if self.categorical_columns:
            inputs["categorical"] = categorical_features(rows, where, self.categorical_columns, self._codes, every)
        return inputs, None

    def targets(self, records: list[Raw]) -> torch.Tensor:
        index = {c: k for k, c in enumerate(self.classes)}
        out = []
        for r in records:
            label = None if r.label is None else spelling(r.label, r.where, self.target)
            if label not in index:
                got = "no target" if label is None else f"target {label!r}"
                raise DataError(f"{r.where}: {got} in {self.target!r}, not a class the run trained on "
                                f"({', '.join(self.classes)}); give rows of the run's classes")
            out.append(index[label])
        return torch.tensor(out, dtype=torch.long)
