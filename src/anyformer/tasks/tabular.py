"""Tabular classification from the user's CSV: numeric and categorical columns, one target."""
from __future__ import annotations

import csv
import math
from array import array
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from anyformer.errors import ConfigError, DataError, suggest
from anyformer.registry import register
from anyformer.tasks.base import Split, Task
from anyformer.tasks.files import existing_file
from anyformer.tasks.splits import stratified_split

MISSING = {"", "nan", "na", "n/a", "null", "none", "?"}


def _unique_names(header: list[str]) -> list[str]:
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


def _number(value: str) -> float | None:
    """float of a numeric field ('Infinity' and 'NaN' included), NaN when missing, None if text."""
    if value.lower() in MISSING:
        return math.nan
    try:
        return float(value)
    except ValueError:
        return None


class _Column:
    """One column read in a single pass: floats while every value is a number, else codes."""

    def __init__(self, forced: str | None) -> None:
        self.forced = forced
        self.numbers: array | None = None if forced == "categorical" else array("d")
        self.codes: array | None = array("i") if forced == "categorical" else None
        self.values: dict[str, int] = {}

    def code(self, value: str) -> int:
        # One spelling per number ('1', '1.0' -> '1.0'), so a column that turns categorical
        # part-way codes its earlier numbers and later text consistently.
        x = _number(value)
        return self.values.setdefault(value if x is None else repr(x), len(self.values))

    def add(self, value: str, where: str, name: str) -> None:
        if self.numbers is not None:
            x = _number(value)
            if x is not None:
                self.numbers.append(x)
                return
            if self.forced == "numeric":
                raise DataError(f"{where}: column {name!r} holds {value!r}, not a number; fix it or drop {name!r} from `numeric`")
            # First text value: the column is categorical after all; recode what came before.
            self.codes = array("i", (self.code(repr(v)) for v in self.numbers))
            self.numbers = None
        self.codes.append(self.code(value))


@register("task", "tabular-csv")
class TabularCSVTask(Task):
    """Classify rows of a CSV by its `target` column (FT-Transformer inputs). A column is
    numeric when every value parses as a number ('Infinity', 'NaN' and blanks allowed),
    else categorical; `categorical` / `numeric` override, `drop` ignores columns. Numbers are
    z-scored with TRAIN mean/std, and missing or infinite values become the train mean (0);
    categories are coded on the train split, 1..k, with 0 for values the train split never
    saw. Headers are stripped of spaces and repeated names made unique ('x.1'), so network-
    flow CSVs (UNSW-NB15, CIC-IDS) load as they are. Split: stratified seeded fractions."""

    argument_option = "path"
    file_options = ("path",)

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
    ) -> None:
        super().__init__()
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

    @staticmethod
    def write_example(folder, n: int = 60) -> dict[str, Any]:
        path = f"{folder}/flows.csv"
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow([" Flow Duration", " proto", "Bytes/s", " Label"])
            for i in range(n):
                w.writerow([i * 3, ["tcp", "udp"][i % 2], "Infinity" if i == 5 else i / 7, ["BENIGN", "DoS"][i % 3 == 0]])
        return {"path": path, "target": "Label"}

    def _read(self) -> tuple[dict[str, _Column], list[str], int]:
        path = existing_file(self.path, "tabular CSV")
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next((r for r in reader if any(f.strip() for f in r)), None)
            if header is None:
                raise DataError(f"{path}: the file is empty; it needs a header row and data rows")
            names = _unique_names([h.strip() for h in header])
            for option, wanted in (("target", [self.target]), ("categorical", self.categorical),
                                   ("numeric", self.numeric), ("drop", self.drop)):
                for name in wanted:
                    if name not in names:
                        raise DataError(f"{path}: no column {name!r}{suggest(name, names)} (option {option}); columns: {', '.join(names)}")
            keep = [(i, n) for i, n in enumerate(names) if n not in self.drop and n != self.target]
            if not keep:
                raise DataError(f"{path}: no feature columns besides the target; drop fewer columns")
            t = names.index(self.target)
            columns = {n: _Column("categorical" if n in self.categorical else "numeric" if n in self.numeric else None) for _, n in keep}
            labels: list[str] = []
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
        if not labels:
            raise DataError(f"{path}: no data rows below the header")
        return columns, labels, len(labels)

    def build_splits(self) -> dict[str, Split]:
        columns, labels, n = self._read()
        def order(c: str) -> tuple:  # numeric class names in numeric order
            x = _number(c)
            return (0, x, "") if x is not None and not math.isnan(x) else (1, 0.0, c)
        self.classes = sorted(set(labels), key=order)
        index = {c: k for k, c in enumerate(self.classes)}
        y = torch.tensor([index[c] for c in labels], dtype=torch.long)
        parts = stratified_split(y, self.fractions, self.split_seed)
        train = parts[0].numpy()
        self.numeric_columns = [c for c, col in columns.items() if col.numbers is not None]
        self.categorical_columns = [c for c, col in columns.items() if col.numbers is None]
        inputs: dict[str, torch.Tensor] = {}
        if self.numeric_columns:
            x = np.stack([np.frombuffer(columns[c].numbers, dtype=np.float64) for c in self.numeric_columns], 1)
            x = np.where(np.isfinite(x), x, np.nan)
            fit = x[train]
            with np.errstate(all="ignore"):
                mean, std = np.nanmean(fit, 0), np.nanstd(fit, 0)
            mean, std = np.nan_to_num(mean), np.where(np.isfinite(std) & (std > 0), std, 1.0)
            inputs["numeric"] = torch.tensor(np.nan_to_num((x - mean) / std), dtype=torch.float32)
        if self.categorical_columns:
            codes, self.cardinalities = [], []
            for c in self.categorical_columns:
                raw = np.frombuffer(columns[c].codes, dtype=np.int32)
                seen = np.unique(raw[train])
                remap = np.zeros(len(columns[c].values), dtype=np.int64)  # 0: unseen in train
                remap[seen] = np.arange(1, len(seen) + 1)
                codes.append(remap[raw])
                self.cardinalities.append(len(seen) + 1)
            inputs["categorical"] = torch.tensor(np.stack(codes, 1))
        return {name: Split({k: v[idx] for k, v in inputs.items()}, y[idx])
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
