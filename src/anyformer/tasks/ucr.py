"""UCR / UEA time-series classification: the archives' .ts / .tsv files, from a folder or from
the copies aeon or sktime ship inside their packages."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field

from anyformer.errors import ConfigError, DataError
from anyformer.registry import register
from anyformer.tasks.base import Split, Task, require_classes
from anyformer.tasks.files import existing_file
from anyformer.tasks.splits import stratified_split

# Packages that ship a few archive sets as files (read without importing the package).
PACKAGES = ("aeon", "sktime")


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
    path = Path(path)
    series, labels, declared, in_data, dims = [], [], None, False, None
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
                    if not words or words[0].lower() != "true":
                        raise DataError(f"{where}: the file declares no class labels; a classification set needs them")
                    declared = words[1:]
                elif key == "@data":
                    in_data = True
                elif not key.startswith("@"):
                    raise DataError(f"{where}: data before the @data line; is this a .ts file?")
                continue
            *channels, label = line.split(":")
            if not channels:
                raise DataError(f"{where}: no ':' before the class label; each line is dim1:dim2:...:label")
            if dims is None:
                dims = len(channels)
            elif len(channels) != dims:
                raise DataError(f"{where}: {len(channels)} dimensions, earlier lines have {dims}")
            series.append([[_number(v, where) for v in ch.split(",")] for ch in channels])
            labels.append(label.strip())
    if not series:
        raise DataError(f"{path}: no series after @data")
    return series, labels, declared


def read_tsv(path: str | Path) -> tuple[list[list[list[float]]], list[str], None]:
    """A UCR-2018 .tsv file: one univariate series a line, its label first; trailing NaNs pad
    the shorter series of variable-length sets."""
    path = Path(path)
    series, labels = [], []
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
    if not series:
        raise DataError(f"{path}: no series")
    return series, labels, None


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
        path = self._find(part)
        return (read_tsv if path.suffix == ".tsv" else read_ts)(path), path

    def build_splits(self) -> dict[str, Split]:
        (train_s, train_y, declared), train_path = self._read("TRAIN")
        (test_s, test_y, _), test_path = self._read("TEST")
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
        x = torch.zeros(len(every), length, dims)
        mask = torch.zeros(len(every), length, dtype=torch.bool)
        for i, s in enumerate(every):
            for d, ch in enumerate(s):
                x[i, :len(ch), d] = torch.tensor(ch)
            mask[i, :max(len(ch) for ch in s)] = True
        x = torch.nan_to_num(x)  # missing values ('?') read as 0
        y = torch.tensor([index[c] for c in labels], dtype=torch.long)
        self._shape = (length, dims)
        n = len(train_s)
        equal = bool(mask.all())
        train, val = stratified_split(y[:n], [1 - self.val_fraction, self.val_fraction], self.split_seed)
        m = None if equal else mask  # no mask for equal lengths: every mixer can take them
        part = lambda idx: Split(x[idx], y[idx], None if m is None else m[idx])  # noqa: E731
        return {"train": part(train), "val": part(val), "test": part(torch.arange(n, len(every)))}

    def _facts(self) -> tuple[int, int]:
        self.splits()
        return self._shape

    def model_defaults(self) -> dict[str, Any]:
        length, dims = self._facts()
        return {"encoder": {"name": "series", "channels": dims, "mode": "step"},
                "head": {"name": "mean", "num_classes": len(self.classes)}, "max_len": length}

    def required_options(self) -> dict[str, dict[str, Any]]:
        length, dims = self._facts()
        return {"encoder": {"channels": dims}, "head": {"num_classes": len(self.classes), "multi_label": False}}
