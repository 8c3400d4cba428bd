"""Text classification from the user's own CSV or JSON-lines file (single- or multi-label)."""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field

from anyformer.errors import ConfigError, DataError, suggest, unknown
from anyformer.registry import register
from anyformer.tasks.base import Split, Task, require_classes
from anyformer.tasks.files import check_encoding, column_index, existing_file, read_csv
from anyformer.tasks.raw import Raw, jsonl_records, text_records
from anyformer.tasks.splits import random_split

TOKENIZERS = ("bytes", "words")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
PAD, UNK = 0, 1
WORD = re.compile(r"\w+|[^\w\s]")


class PretrainedTokenizer:
    """A Hugging Face tokenizer.json read with the `tokenizers` library: its own vocabulary,
    normaliser and special tokens (BERT's [CLS] ... [SEP]), cut to `max_len` ids with the
    special tokens kept, as the model it came with was trained."""

    def __init__(self, path: str, max_len: int) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ConfigError("tokenizer: reading a tokenizer.json needs the tokenizers library; pip install 'anyformer[hf]'") from None
        file = existing_file(path, "tokenizer.json")
        try:
            self.tokenizer = Tokenizer.from_file(str(file))
        except Exception as err:  # noqa: BLE001 - the library raises a bare Exception on a malformed file
            raise DataError(f"{file}: not a tokenizer.json the tokenizers library reads ({str(err).splitlines()[0]}); "
                            "give the tokenizer.json saved with the model") from None
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_len)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        pad = next((self.tokenizer.token_to_id(t) for t in ("[PAD]", "<pad>", "<|padding|>")
                    if self.tokenizer.token_to_id(t) is not None), None)
        self.pad_id = 0 if pad is None else pad  # padded positions are masked: any id will do

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids


def load_tokenizer(name: str, max_len: int) -> PretrainedTokenizer:
    """The tokenizer option when it is not a built-in name: a tokenizer.json path."""
    if not name.endswith(".json") and "/" not in name:
        raise unknown("tokenizer", name, TOKENIZERS + ("PATH/tokenizer.json",))
    return PretrainedTokenizer(name, max_len)


class TextFileTask(Task):
    """Base of text-csv / text-jsonl: rows of (text, label[, split]) -> padded token ids.

    tokenizer 'bytes': UTF-8 bytes (vocabulary 256, byte 0 doubles as padding); 'words':
    lower-cased words and punctuation, vocabulary built on the TRAIN split only (the
    `max_vocab` most frequent; 0 pad, 1 unknown); a tokenizer.json path: that tokenizer's
    ids (its vocabulary and special tokens, its [PAD] as padding). Texts are cut to `max_len` tokens.
    A label holding a JSON list, or several labels joined by `label_delimiter`, makes the
    task multi-label (multi-hot targets, BCE loss, ROC-AUC / macro-F1). Labels that leave
    nothing to learn are refused: one class (multi-label: the same labels on every row), or
    a label that is JSON null, an object, a nested list or NaN. Splits: a `split`
    column (train / val|valid|validation|dev / test) when the file has one, else a seeded
    random `val_fraction` / `test_fraction`. The file is read in `encoding` (utf-8 by
    default); a byte that does not decode is an error naming its line and offset."""

    argument_option = "path"
    file_options = ("path",)
    raw_input = "text"
    bundled_options = ("tokenizer",)

    problem = "classification"
    modality = "tokens"
    paper = "Byte-level text classification as in the LRA Text task (Tay et al. 2021)"

    def __init__(
        self,
        path: Annotated[str, Field(description="the data file (CSV with a header row, or JSON lines)")],
        text_column: Annotated[str, Field(description="column (JSONL: key) holding the text")] = "text",
        label_column: Annotated[str, Field(description="column (JSONL: key) holding the label; a JSON list makes the task multi-label")] = "label",
        tokenizer: Annotated[str, Field(description="'bytes' (UTF-8 bytes, vocabulary 256), 'words' (vocabulary from the train split), "
                                                "or the path of a tokenizer.json (a Hugging Face tokenizer, e.g. an imported BERT's)")] = "bytes",
        max_len: Annotated[int, Field(description="texts are cut to this many tokens")] = 512,
        max_vocab: Annotated[int, Field(description="'words' tokenizer: keep this many most frequent words (pad and unknown included)")] = 30000,
        label_delimiter: Annotated[str | None, Field(description="split a label on this string into several labels (multi-label), e.g. '|'")] = None,
        split_column: Annotated[str, Field(description="column naming each row's split (train / val / test); used when the file has it")] = "split",
        val_fraction: Annotated[float, Field(description="share of rows held out for val when the file names no splits")] = 0.1,
        test_fraction: Annotated[float, Field(description="share of rows held out for test when the file names no splits")] = 0.1,
        split_seed: Annotated[int, Field(description="seed of the random val / test split")] = 0,
        encoding: Annotated[str, Field(description="the file's text encoding, a Python codec name (utf-8, latin-1, cp1252, ...)")] = "utf-8",
    ) -> None:
        super().__init__()
        self.encoding = check_encoding(encoding, self.name)
        self.pretrained = None if tokenizer in TOKENIZERS else load_tokenizer(tokenizer, max_len)
        if max_len < 1 or max_vocab < 3:
            raise ConfigError(f"task {self.name!r}: max_len must be >= 1 and max_vocab >= 3 (got {max_len}, {max_vocab})")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ConfigError(f"task {self.name!r}: val_fraction and test_fraction must be in (0, 1) with a sum below 1")
        self.path, self.text_column, self.label_column = path, text_column, label_column
        self.tokenizer, self.max_len, self.max_vocab = tokenizer, max_len, max_vocab
        self.label_delimiter, self.split_column = label_delimiter, split_column
        self.fractions = [1 - val_fraction - test_fraction, val_fraction, test_fraction]
        self.split_seed = split_seed
        self.classes: list[str] = []
        self.vocab: dict[str, int] = {}
        self._length = 0

    # -- reading: [(line, text, labels (list), split name or None)]
    def read_rows(self) -> list[tuple[int, str, list[str], str | None]]:
        raise NotImplementedError

    def _label(self, value: Any, where: str) -> str:
        """One class name from a JSON scalar; null, an object, a nested list or a NaN is no
        class name (str() would make classes 'None', "{'a': 1}" or 'nan' of them)."""
        if value is None or isinstance(value, (dict, list)) or (isinstance(value, float) and not math.isfinite(value)):
            shown = "null" if value is None else "NaN" if isinstance(value, float) else f"a JSON {'object' if isinstance(value, dict) else 'list'}"
            raise DataError(f"{where}: the label in {self.label_column!r} is {shown}; give a string or a number "
                            "(a list of them for several labels), or drop the row")
        return str(value)

    def _labels(self, value: Any, where: str) -> list[str]:
        if isinstance(value, list):
            self.multi_label = True
            return [self._label(v, where) for v in value]
        if not isinstance(value, str):
            return [self._label(value, where)]
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                self.multi_label = True
                return [self._label(v, where) for v in parsed]
        if self.label_delimiter and self.label_delimiter in value:
            self.multi_label = True
            return [v.strip() for v in value.split(self.label_delimiter) if v.strip()]
        if not value:
            raise DataError(f"{where}: empty label in column {self.label_column!r}; fill it or drop the row")
        return [value]

    def _split_of(self, value: Any, where: str) -> str:
        name = SPLIT_NAMES.get(str(value).strip().lower())
        if name is None:
            raise DataError(f"{where}: split {value!r}{suggest(str(value), SPLIT_NAMES)} is not one of train, val, test")
        return name

    def _check_classes(self, rows: list[tuple[int, str, list[str], str | None]]) -> None:
        """Refuse labels that leave nothing to learn: one class for single-label data, the
        same set of labels on every row for multi-label data."""
        if not self.multi_label:
            require_classes(sorted({r[2][0] for r in rows}), str(self.path), f"the label column {self.label_column!r}")
            return
        sets = {tuple(sorted(set(r[2]))) for r in rows}
        if len(sets) == 1:
            raise DataError(f"{self.path}: every row has the labels {list(next(iter(sets)))} in {self.label_column!r}; "
                            "a classifier needs rows whose labels differ")

    # -- tokens
    @property
    def pad_id(self) -> int:
        return PAD if self.pretrained is None else self.pretrained.pad_id

    def tokenize(self, text: str) -> list[int]:
        if self.pretrained is not None:
            return self.pretrained.encode(text)
        if self.tokenizer == "bytes":
            return list(text.encode("utf-8")[: self.max_len])
        return [self.vocab.get(w, UNK) for w in WORD.findall(text.lower())[: self.max_len]]

    def build_splits(self) -> dict[str, Split]:
        self.multi_label = False
        rows = self.read_rows()
        if not rows:
            raise DataError(f"{self.path}: no data rows (the file holds no more than a header or blank lines); add rows")
        self._check_classes(rows)
        missing = [r[0] for r in rows if r[3] is None]
        if missing and len(missing) < len(rows):
            raise DataError(f"{self.path}:{missing[0]}: no split given while other rows have one; give every row a split or none")
        if not missing:
            parts = {name: torch.tensor([i for i, r in enumerate(rows) if r[3] == name], dtype=torch.long)
                     for name in ("train", "val", "test")}
            empty = [name for name, idx in parts.items() if len(idx) == 0]
            if empty:
                counts = ", ".join(f"{name}: {len(idx)}" for name, idx in parts.items())
                raise DataError(f"{self.path}: no row has split {empty[0]!r} in column {self.split_column!r} ({counts}); "
                                f"give some rows split={empty[0]}, or remove the column to split at random")
        else:
            parts = dict(zip(("train", "val", "test"), random_split(len(rows), self.fractions, self.split_seed)))
        self._parts = parts
        if not self.multi_label:  # the file may hold two classes and still train on one
            require_classes(sorted({rows[i][2][0] for i in parts["train"].tolist()}), str(self.path),
                            f"the train split's label column {self.label_column!r}")
        if self.tokenizer == "words":
            counts = Counter(w for i in parts["train"].tolist() for w in WORD.findall(rows[i][1].lower()))
            self.vocab = {w: k + 2 for k, (w, _) in enumerate(counts.most_common(self.max_vocab - 2))}
        self.classes = sorted({label for r in rows for label in r[2]})
        index = {c: k for k, c in enumerate(self.classes)}
        ids = [self.tokenize(r[1]) for r in rows]
        self._length = max(1, max(len(t) for t in ids))
        tokens, mask = self._padded(ids)
        target = self._targets([r[2] for r in rows], [f"{self.path}:{r[0]}" for r in rows], index)
        return {name: Split(tokens[idx], target[idx], mask[idx], transform=lambda x: x.long())
                for name, idx in parts.items()}

    def _padded(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids [N, length] int32 padded with pad_id, mask [N, length]) at the run's length."""
        tokens = torch.full((len(ids), self._length), self.pad_id, dtype=torch.int32)
        mask = torch.zeros(len(ids), self._length, dtype=torch.bool)
        for i, t in enumerate(ids):
            tokens[i, :len(t)] = torch.tensor(t, dtype=torch.int32)
            mask[i, :max(1, len(t))] = True  # an empty text keeps one (pad) token to pool over
        return tokens, mask

    def _targets(self, labels: list[list[str]], where: list[str], index: dict[str, int]) -> torch.Tensor:
        unseen = next(((w, c) for w, ls in zip(where, labels) for c in ls if c not in index), None)
        if unseen is not None:
            raise DataError(f"{unseen[0]}: label {unseen[1]!r} is not one the run trained on ({', '.join(self.classes)})")
        if self.multi_label:
            target = torch.zeros(len(labels), len(self.classes))
            for i, ls in enumerate(labels):
                target[i, [index[c] for c in ls]] = 1.0
            return target
        return torch.tensor([index[ls[0]] for ls in labels], dtype=torch.long)

    # -- predict: the vocabulary, classes and length the run trained with
    def preprocessing(self) -> dict[str, Any]:
        self.splits()
        return {"classes": self.classes, "multi_label": self.multi_label, "length": self._length, "vocab": self.vocab}

    def restore(self, state: dict[str, Any]) -> None:
        self.classes, self.multi_label = list(state["classes"]), bool(state["multi_label"])
        self._length, self.vocab = int(state["length"]), dict(state["vocab"])
        if self.pretrained is not None:  # the model reads `length` tokens at most; keep the special tokens
            self.pretrained.tokenizer.enable_truncation(max_length=self._length)

    def records(self) -> list[Raw]:
        return [Raw(text, f"{self.path}:{line}", labels) for line, text, labels, _ in self.read_rows()]

    def read_inputs(self, path: Path) -> list[Raw]:
        return text_records(path, self.text_column, self.encoding)

    def encode(self, records: list[Raw]) -> tuple[torch.Tensor, torch.Tensor]:
        for r in records:
            if not isinstance(r.value, str):
                raise DataError(f"{r.where}: expected a text, got {type(r.value).__name__}; give strings")
        tokens, mask = self._padded([self.tokenize(r.value)[: self._length] for r in records])
        return tokens.long(), mask

    def targets(self, records: list[Raw]) -> torch.Tensor:
        return self._targets([r.label for r in records], [r.where for r in records],
                             {c: k for k, c in enumerate(self.classes)})

    def _facts(self) -> tuple[int, int, int]:
        self.splits()
        vocab = (self.pretrained.vocab_size if self.pretrained is not None
                 else 256 if self.tokenizer == "bytes" else len(self.vocab) + 2)
        return vocab, len(self.classes), self._length

    def model_defaults(self) -> dict[str, Any]:
        vocab, classes, length = self._facts()
        return {"encoder": {"name": "tokens", "vocab_size": vocab, "pad_id": self.pad_id},
                "head": {"name": "mean", "num_classes": classes, "multi_label": self.multi_label}, "max_len": length}

    def required_options(self) -> dict[str, dict[str, Any]]:
        vocab, classes, _ = self._facts()
        return {"encoder": {"vocab_size": vocab}, "head": {"num_classes": classes, "multi_label": self.multi_label}}


@register("task", "text-csv")
class TextCSVTask(TextFileTask):
    """Text classification from a CSV file with a header: `text_column`, `label_column` and
    optionally `split_column`. See TextFileTask for tokenizers, labels and splits."""

    example_options: dict = {}

    @staticmethod
    def write_example(folder, n: int = 30) -> dict[str, Any]:
        import csv
        path = f"{folder}/text.csv"
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            for i in range(n):
                w.writerow([("good film " if i % 2 else "bad, dull film ") * (1 + i % 3), "pos" if i % 2 else "neg"])
        return {"path": path, "max_len": 32}

    def read_rows(self):
        header, rows = read_csv(existing_file(self.path, "text CSV"), encoding=self.encoding, encoding_option="task.encoding")
        t = column_index(header, self.text_column, self.path, "text_column")
        y = column_index(header, self.label_column, self.path, "label_column")
        s = header.index(self.split_column) if self.split_column in header else None
        return [(line, f[t], self._labels(f[y], f"{self.path}:{line}"),
                 None if s is None else self._split_of(f[s], f"{self.path}:{line}")) for line, f in rows]


@register("task", "text-jsonl")
class TextJSONLTask(TextFileTask):
    """Text classification from JSON lines: one object per line with `text_column`,
    `label_column` (a string, a number, or a list for multi-label) and optionally `split`."""

    example_options: dict = {}

    @staticmethod
    def write_example(folder, n: int = 30) -> dict[str, Any]:
        path = f"{folder}/text.jsonl"
        with open(path, "w") as fh:
            for i in range(n):
                fh.write(json.dumps({"text": "a b c " * (1 + i % 4), "label": ["x"] if i % 2 else ["x", "y"]}) + "\n")
        return {"path": path, "tokenizer": "words", "max_len": 16}

    def read_rows(self):
        path = existing_file(self.path, "text JSONL file")
        out = []
        for row in jsonl_records(path, self.encoding):
            obj, where, line = row.value, row.where, row.line
            for key, option in ((self.text_column, "text_column"), (self.label_column, "label_column")):
                if key not in obj:
                    raise DataError(f"{where}: no key {key!r}{suggest(key, obj)}; set {option} to one of: {', '.join(obj)}")
            text = obj[self.text_column]
            if not isinstance(text, (str, int, float)) or isinstance(text, bool):
                # str() would train on 'None', "{'a': 1}" or 'True' as if it were the text.
                shown = "null" if text is None else f"a JSON {type(text).__name__.replace('dict', 'object')}"
                raise DataError(f"{where}: the text in {self.text_column!r} is {shown}; give a string, or drop the row")
            split = obj.get(self.split_column)
            out.append((line, str(text), self._labels(obj[self.label_column], where),
                        None if split is None else self._split_of(split, where)))
        return out
