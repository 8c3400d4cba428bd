"""UCR / UEA time-series classification: the archives' .ts / .tsv files, from a folder or from
the copies aeon or sktime ship inside their packages."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from anyformer.errors import ConfigError, DataError
from anyformer.registry import register
from anyformer.tasks.base import Split, Task, require_classes
from anyformer.tasks.files import decode_error, existing_file, is_number
from anyformer.tasks.raw import Raw
from anyformer.tasks.splits import stratified_split

# Packages that ship a few archive sets as files (read without importing the package).
PACKAGES = ("aeon", "sktime")
INPUT_SUFFIXES = (".ts", ".tsv", ".csv", ".npy")


def _number(value: str, where: str) -> float:
    if value.strip() in ("?", "", "NaN", "nan"):
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{where}: {value!r} is not a number; fix the value") from None


def read_ts(path: str | Path) -> tuple[list[list[list[float]]], list[str], list[str] | None]:
    """A sktime/aeon .ts file -> (series [n][dims][length], labels, declared class labels).
    Each data line holds the dimensions separated by ':' and the class label last."""
    return _read_ts(path)[:3]


def _read_ts(path: str | Path, need_labels: bool = True):
    """read_ts's (series, labels, declared) and each series' line number. Without
    `need_labels`, a file declaring '@classLabel false' is read too (labels None)."""
    path = Path(path)
    series, labels, declared, in_data, dims, lines, labelled = [], [], None, False, None, [], True
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line_no, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}:{line_no}"
            if not in_data:
                key, _, rest = line.partition(" ")
                key = key.lower()
                if key == "@timestamps" and rest.strip().lower() == "true":
                    raise DataError(f"{where}: time-stamped .ts files are not supported; export the values without time stamps")
                if key == "@classlabel":
                    words = rest.split()
                    if not need_labels and words and words[0].lower() == "false":
                        labelled = False
                    elif not words or words[0].lower() != "true":
                        raise DataError(f"{where}: the file declares no class labels; a classification set needs them")
                    declared = words[1:] if labelled else None
                elif key == "@data":
                    in_data = True
                elif not key.startswith("@"):
                    raise DataError(f"{where}: data before the @data line; is this a .ts file?")
                continue
            *channels, label = line.split(":") if labelled else [*line.split(":"), None]
            if not channels:
                raise DataError(f"{where}: no ':' before the class label; each line is dim1:dim2:...:label")
            if dims is None:
                dims = len(channels)
            elif len(channels) != dims:
                raise DataError(f"{where}: {len(channels)} dimensions, earlier lines have {dims}")
            series.append([[_number(v, where) for v in ch.split(",")] for ch in channels])
            labels.append(None if label is None else label.strip())
            lines.append(line_no)
    if not series:
        raise DataError(f"{path}: no series after @data")
    return series, labels, declared, lines


def read_tsv(path: str | Path) -> tuple[list[list[list[float]]], list[str], None]:
    """A UCR-2018 .tsv file: one univariate series a line, its label first; trailing NaNs pad
    the shorter series of variable-length sets."""
    return _read_tsv(path)[:3]


def _read_tsv(path: str | Path):
    """read_tsv's (series, labels, None) and each series' line number."""
    path = Path(path)
    series, labels, lines = [], [], []
    with path.open(encoding="utf-8") as fh:
        for line_no, raw in enumerate(fh, 1):
            fields = raw.strip().split("\t") if "\t" in raw else raw.strip().split(",")
            if not fields or not fields[0]:
                continue
            values = [_number(v, f"{path}:{line_no}") for v in fields[1:]]
            while values and math.isnan(values[-1]):
                values.pop()
            if not values:
                raise DataError(f"{path}:{line_no}: a label with no values")
            series.append([values])
            labels.append(fields[0].strip())
            lines.append(line_no)
    if not series:
        raise DataError(f"{path}: no series")
    return series, labels, None, lines


def read_csv_series(path: Path) -> list[Raw]:
    """One univariate series per CSV row (rows may differ in length; trailing empty fields
    and NaNs dropped, as in .tsv); a first row of no numbers at all is a header."""
    records = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            for fields in reader:
                fields = [f.strip() for f in fields]
                while fields and not fields[-1]:
                    fields.pop()
                if not fields:
                    continue
                where = f"{path}:{reader.line_num}"
                if not records and not any(is_number(f) for f in fields):
                    continue
                values = [_number(f, where) for f in fields]
                while values and math.isnan(values[-1]):
                    values.pop()
                records.append(Raw([values], where))
    except UnicodeDecodeError:
        raise decode_error(path, "utf-8", None) from None
    if not records:
        raise DataError(f"{path}: no series; give one series per row")
    return records


def read_npy_series(path: Path) -> list[Raw]:
    """The series of a .npy array [N, length] (one dimension) or [N, dims, length]."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable array of numbers ({str(err).splitlines()[0]}); "
                        "save a plain numeric array [N, length] or [N, dims, length]") from None
    if array.ndim not in (2, 3):
        raise DataError(f"{path}: an array of shape {list(array.shape)}; give [N, length] or [N, dims, length]")
    return [Raw(a[None] if a.ndim == 1 else a, f"{path} [series {i}]") for i, a in enumerate(array)]


def pad(series: list[list[Any]], length: int, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [N, length, dims] float32 zero-padded at the end, missing values 0; mask
    [N, length], True up to each series' longest dimension) of series [N][dims][steps]."""
    x = torch.zeros(len(series), length, dims)
    mask = torch.zeros(len(series), length, dtype=torch.bool)
    for i, s in enumerate(series):
        for d, ch in enumerate(s):
            x[i, :len(ch), d] = torch.as_tensor(ch)
        mask[i, :max(len(ch) for ch in s)] = True
    return torch.nan_to_num(x), mask  # missing values ('?') read as 0


@register("task", "ucr")
class UCRTask(Task):
    """Classify a UCR/UEA archive set (Dau et al. 2019; Bagnall et al. 2018), e.g. GunPoint,
    ItalyPowerDemand, BasicMotions, JapaneseVowels: NAME_TRAIN / NAME_TEST as .ts or .tsv,
    from `data_dir` (or data_dir/NAME/) or else from the copies aeon or sktime ship
    (`pip install aeon`). Series [L, C] (C = dimensions) for the `series` encoder; sets of
    unequal length are zero-padded at the end and masked. The archive's TEST file is the
    test split; a stratified seeded `val_fraction` of TRAIN is the val split."""

    argument_option = "dataset"
    file_options = ("data_dir",)
    raw_input = "series"

    problem = "classification"
    modality = "series"
    paper = "The UCR Time Series Archive (Dau et al. 2019); UEA multivariate archive (Bagnall et al. 2018)"

    def __init__(
        self,
        dataset: Annotated[str, Field(description="archive set name, e.g. GunPoint, ItalyPowerDemand, BasicMotions (files NAME_TRAIN / NAME_TEST)")] = "GunPoint",
        data_dir: Annotated[str | None, Field(description="folder with NAME_TRAIN.ts / NAME_TEST.ts (or .tsv, or under NAME/); default: the copies aeon or sktime ship")] = None,
        val_fraction: Annotated[float, Field(description="share of TRAIN held out for val (stratified)")] = 0.1,
        split_seed: Annotated[int, Field(description="seed of the val split")] = 0,
    ) -> None:
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ConfigError(f"task 'ucr': val_fraction must be in (0, 1), got {val_fraction}")
        self.dataset, self.data_dir, self.val_fraction, self.split_seed = dataset, data_dir, val_fraction, split_seed
        self.classes: list[str] = []
        self._shape: tuple[int, int] | None = None
        self._masked = False

    @staticmethod
    def write_example(folder, n: int = 24) -> dict[str, Any]:
        """Tiny two-dimensional, unequal-length .ts files (NAME 'Toy')."""
        for part, count in (("TRAIN", n), ("TEST", n // 2)):
            lines = ["@problemName Toy", "@timeStamps false", "@univariate false", "@dimensions 2",
                     "@equalLength false", "@classLabel true a b", "@data"]
            for i in range(count):
                length = 6 + i % 3
                ch = [",".join(f"{(i % 2) * 2 - 1 + 0.1 * t * d:.2f}" for t in range(length)) for d in (1, 2)]
                lines.append(f"{ch[0]}:{ch[1]}:{'ab'[i % 2]}")
            Path(folder, f"Toy_{part}.ts").write_text("\n".join(lines) + "\n")
        return {"dataset": "Toy", "data_dir": str(folder)}

    def _find(self, part: str) -> Path:
        name = f"{self.dataset}_{part}"
        if self.data_dir is not None:
            folder = Path(self.data_dir)
            for candidate in (folder / f"{name}.ts", folder / self.dataset / f"{name}.ts",
                              folder / f"{name}.tsv", folder / self.dataset / f"{name}.tsv"):
                if candidate.is_file():
                    return candidate
            return existing_file(folder / f"{name}.ts", f"UCR file (nor .tsv, nor under {self.dataset}/)",
                                 "download the set from timeseriesclassification.com into data_dir")
        import importlib.util
        installed = []
        for package in PACKAGES:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                continue
            installed.append(package)
            folder = Path(next(iter(spec.submodule_search_locations)), "datasets", "data", self.dataset)
            for ext in (".ts", ".tsv"):
                if (folder / f"{name}{ext}").is_file():
                    return folder / f"{name}{ext}"
        if not installed:
            raise DataError(
                f"UCR set {self.dataset!r}: neither aeon nor sktime is installed; `pip install aeon` "
                "(or `pip install 'anyformer[data]'`) for the sets they ship, or pass data_dir with NAME_TRAIN.ts / NAME_TEST.ts"
            )
        raise DataError(
            f"UCR set {self.dataset!r} is not shipped by {' or '.join(installed)} (they ship e.g. GunPoint, ItalyPowerDemand, "
            "BasicMotions, JapaneseVowels, ArrowHead, OSULeaf); pass data_dir with its .ts files"
        )

    def _read(self, part: str):
        """((series, labels, declared, line numbers), path) of the NAME_part file."""
        path = self._find(part)
        return (_read_tsv if path.suffix == ".tsv" else _read_ts)(path), path

    def build_splits(self) -> dict[str, Split]:
        (train_s, train_y, declared, _), train_path = self._read("TRAIN")
        (test_s, test_y, _, _), test_path = self._read("TEST")
        dims = len(train_s[0])
        if len(test_s[0]) != dims:
            raise DataError(f"{test_path}: {len(test_s[0])} dimensions, {train_path} has {dims}")
        require_classes(sorted(set(train_y)), str(train_path), "the class labels")
        labels = train_y + test_y
        self.classes = list(declared) if declared else sorted(set(labels), key=lambda c: (len(c), c))
        unknown_labels = sorted(set(labels) - set(self.classes))
        if unknown_labels:
            raise DataError(f"{train_path}: labels {unknown_labels} are not among the declared @classLabel {self.classes}")
        index = {c: k for k, c in enumerate(self.classes)}
        every = train_s + test_s
        length = max(len(ch) for s in every for ch in s)
        x, mask = pad(every, length, dims)
        y = torch.tensor([index[c] for c in labels], dtype=torch.long)
        self._shape = (length, dims)
        n = len(train_s)
        equal = bool(mask.all())
        self._masked = not equal
        train, val = stratified_split(y[:n], [1 - self.val_fraction, self.val_fraction], self.split_seed)
        self._parts = {"train": train, "val": val, "test": torch.arange(n, len(every))}
        m = None if equal else mask  # no mask for equal lengths: every mixer can take them
        part = lambda idx: Split(x[idx], y[idx], None if m is None else m[idx])  # noqa: E731
        return {"train": part(train), "val": part(val), "test": part(torch.arange(n, len(every)))}

    def _facts(self) -> tuple[int, int]:
        if self._shape is None:  # restored from a run: known without reading the data
            self.splits()
        return self._shape

    # -- predict: the classes, the padded length and the dimensions the run trained with
    def preprocessing(self) -> dict[str, Any]:
        length, dims = self._facts()
        return {"classes": self.classes, "length": length, "dims": dims, "masked": self._masked}

    def restore(self, state: dict[str, Any]) -> None:
        self.classes, self._masked = list(state["classes"]), bool(state["masked"])
        self._shape = (int(state["length"]), int(state["dims"]))

    def records(self) -> list[Raw]:
        out = []
        for part in ("TRAIN", "TEST"):
            (series, labels, _, lines), path = self._read(part)
            out += [Raw(s, f"{path}:{line}", y) for s, y, line in zip(series, labels, lines)]
        return out

    def read_inputs(self, path: Path) -> list[Raw]:
        """A .ts file (labels, or '@classLabel false'), a .tsv (a label first on each line,
        ignored), a CSV of one series per row, or a .npy [N, length] / [N, dims, length]."""
        path = existing_file(path, "input file")
        suffix = path.suffix.lower()
        if suffix == ".ts":
            series, labels, _, lines = _read_ts(path, need_labels=False)
        elif suffix == ".tsv":
            series, labels, _, lines = _read_tsv(path)
        elif suffix == ".csv":
            return read_csv_series(path)
        elif suffix == ".npy":
            return read_npy_series(path)
        else:
            raise DataError(f"{path}: not a series file; give {', '.join(INPUT_SUFFIXES)}")
        return [Raw(s, f"{path}:{line}", y) for s, y, line in zip(series, labels, lines)]

    def _channels(self, record: Raw) -> list[np.ndarray]:
        """A record's series as `dims` float64 arrays of steps, checked against the run."""
        length, dims = self._facts()
        value = record.value
        try:
            if isinstance(value, (np.ndarray, torch.Tensor)) or (len(value) and np.isscalar(value[0])):
                array = np.asarray(value, dtype=np.float64)
                channels = [array] if array.ndim == 1 else list(array)  # [steps] or [dims, steps]
            else:
                channels = [np.asarray(ch, dtype=np.float64) for ch in value]
        except (TypeError, ValueError, KeyError, IndexError):
            raise DataError(f"{record.where}: not a series of numbers; give [dims][steps] numbers") from None
        if any(ch.ndim != 1 for ch in channels):
            raise DataError(f"{record.where}: not a series [dims, steps]; give one list of numbers per dimension")
        if len(channels) != dims:
            raise DataError(f"{record.where}: {len(channels)} dimensions, the run was trained on {dims}")
        steps = max(len(ch) for ch in channels)
        if steps == 0:
            raise DataError(f"{record.where}: a series with no values")
        if steps > length:
            raise DataError(f"{record.where}: {steps} steps, longer than the {length} the run was trained on; shorten it")
        if not self._masked and steps != length:
            raise DataError(f"{record.where}: {steps} steps; the run was trained on series of exactly {length}")
        return channels

    def encode(self, records: list[Raw]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(series [N, length, dims] float32, mask [N, length] when the run used one)."""
        length, dims = self._facts()
        x, mask = pad([self._channels(r) for r in records], length, dims)
        return x, mask if self._masked else None

    def targets(self, records: list[Raw]) -> torch.Tensor:
        index = {c: k for k, c in enumerate(self.classes)}
        for r in records:
            if r.label not in index:
                raise DataError(f"{r.where}: label {r.label!r} is not one the run trained on ({', '.join(self.classes)})")
        return torch.tensor([index[r.label] for r in records], dtype=torch.long)

    def model_defaults(self) -> dict[str, Any]:
        length, dims = self._facts()
        return {"encoder": {"name": "series", "channels": dims, "mode": "step"},
                "head": {"name": "mean", "num_classes": len(self.classes)}, "max_len": length}

    def required_options(self) -> dict[str, dict[str, Any]]:
        length, dims = self._facts()
        return {"encoder": {"channels": dims}, "head": {"num_classes": len(self.classes), "multi_label": False}}
