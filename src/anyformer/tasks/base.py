"""The Task contract: data splits + default encoder and head + loss + metrics.

A task is registered as kind "task"; its `__init__` keywords are its options (validated
like any component's). Splits live in memory as tensors (`Split`), so batching is a
seeded permutation and a position in it: exact to resume, no worker processes.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from anyformer import registry
from anyformer.errors import ConfigError, DataError
from anyformer.tasks.problems import Problem

Inputs = torch.Tensor | dict[str, torch.Tensor]

# The preset compare starts from for each input modality (token inputs: bert, or gpt when
# the problem needs a causal model; any other modality: transformer) ...
BASELINE_PRESETS: dict[str, str] = {"images": "vit"}
# ... and that design pooling every token instead of reading a [CLS] token, for mixers that
# need the whole patch grid (modalities absent here have no such variant).
POOLED_BASELINE_PRESETS: dict[str, str] = {"images": "vit-gap"}


def require_classes(classes: Sequence[Any], where: str, column: str) -> None:
    """Refuse a classification target with fewer than two classes: trained on one, every
    model reports accuracy 1.0 and loss 0.0, numbers that say nothing."""
    if len(classes) == 0:
        raise DataError(f"{where}: no class in {column}; a classifier needs at least two")
    if len(classes) == 1:
        raise DataError(f"{where}: only one class {classes[0]!r} in {column}; a classifier needs at least two "
                        "(is it the right column, and does the file hold every class?)")


@dataclass
class Batch:
    """One batch: model inputs (tensor or dict of tensors), padding mask, targets."""

    inputs: Inputs
    target: torch.Tensor
    mask: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda t: t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t  # noqa: E731
        inputs = {k: move(v) for k, v in self.inputs.items()} if isinstance(self.inputs, dict) else move(self.inputs)
        return Batch(inputs, move(self.target), move(self.mask))

    def __len__(self) -> int:
        return int(self.target.shape[0])


@dataclass
class Split:
    """A split held as tensors; `transform` turns stored inputs (e.g. uint8) into model
    inputs batch by batch, so large image sets stay compact in memory."""

    inputs: Inputs
    target: torch.Tensor
    mask: torch.Tensor | None = None
    transform: Callable[[Inputs], Inputs] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.target)
        sizes = [len(v) for v in self.inputs.values()] if isinstance(self.inputs, dict) else [len(self.inputs)]
        if any(s != n for s in sizes) or (self.mask is not None and len(self.mask) != n):
            raise DataError(f"split inputs ({sizes}) and targets ({n}) differ in length")

    def __len__(self) -> int:
        return int(len(self.target))

    def batch(self, index: torch.Tensor) -> Batch:
        inputs = {k: v[index] for k, v in self.inputs.items()} if isinstance(self.inputs, dict) else self.inputs[index]
        if self.transform is not None:
            inputs = self.transform(inputs)
        return Batch(inputs, self.target[index], None if self.mask is None else self.mask[index])

    def subset(self, index: torch.Tensor) -> "Split":
        inputs = {k: v[index] for k, v in self.inputs.items()} if isinstance(self.inputs, dict) else self.inputs[index]
        return Split(inputs, self.target[index], None if self.mask is None else self.mask[index], self.transform)


class Task:
    """Base of every task. Subclasses set the class attributes and implement `build_splits`
    and `model_defaults`; loss, metrics and the primary metric come from the registered
    problem strategy (`strategy`, tasks/problems.py) unless overridden.

    problem: the strategy's name: 'classification' (targets: class index [N], or multi-hot
    [N, K] when `multi_label`, which selects the problem's multi-label form), 'forecast'
    (targets [N, H, C]), 'lm' (targets [N, L], -100 = ignore).
    modality: which encoder family the inputs need ('images', 'tokens', 'series', 'tabular').
    A subclass may set `primary_metric` (and `higher_is_better`) as class attributes.
    """

    problem: ClassVar[str] = "classification"
    modality: ClassVar[str] = "tokens"
    paper: ClassVar[str] = ""
    # Options the test suite uses to make a small, fast instance of this task.
    example_options: ClassVar[dict] = {}
    # The option a command-line name 'task:ARG' sets ('ucr:GunPoint' -> dataset); None: no ARG.
    argument_option: ClassVar[str | None] = None
    # Options that name a local file or folder: a run stores them absolute, so `anyformer
    # eval RUN` and a resume find the data from any working directory.
    file_options: ClassVar[tuple[str, ...]] = ()
    multi_label: bool = False
    # What `predict` reads as raw input (tasks/raw.py): 'text', 'table', 'images', 'series';
    # None: the task takes no raw input (its data is generated: `predict --split` only).
    raw_input: ClassVar[str | None] = None
    # Options naming a file a run keeps a copy of (a tokenizer.json), so the run predicts
    # and generates wherever it is moved: the copy replaces the option when it is reloaded.
    bundled_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self._splits: dict[str, Split] | None = None
        # Each split's positions in `records()`, set by a build_splits that reads records.
        self._parts: dict[str, torch.Tensor] = {}

    @classmethod
    def parse_argument(cls, arg: str) -> dict[str, Any]:
        """Options set by the ARG of 'name:ARG' on the command line."""
        return {cls.argument_option: arg}

    @property
    def name(self) -> str:
        return getattr(self, "registry_name", type(self).__name__)

    @property
    def strategy(self) -> Problem:
        """The registered problem strategy named by `problem` (its multi-label form when
        `multi_label`). Some tasks set `problem` / `multi_label` per instance, and
        `multi_label` only once their data is read, so the strategy is kept for the pair it
        was made for (loss and metrics ask for it on every batch)."""
        key = (self.problem, self.multi_label)
        kept = self.__dict__.get("_strategy")
        if kept is not None and kept[0] == key:
            return kept[1]
        cls = registry.get("problem", self.problem)
        if self.multi_label:
            if cls.multi_label_variant is None:
                raise ConfigError(f"task {self.name!r}: problem {self.problem!r} has no multi-label form; "
                                  "give one target per example")
            cls = registry.get("problem", cls.multi_label_variant)
        self._strategy = (key, cls())
        return self._strategy[1]

    @property
    def primary_metric(self) -> str:
        """The metric runs select by and compare reports: the strategy's."""
        return self.strategy.primary_metric

    @property
    def higher_is_better(self) -> bool:
        """Whether a higher `primary_metric` is better, as the strategy declares it."""
        return self.strategy.higher_is_better(self.primary_metric)

    # -- data
    def build_splits(self) -> dict[str, Split]:
        """Return {'train': ..., 'val': ..., 'test': ...} (more splits may follow)."""
        raise NotImplementedError

    def data_source(self) -> str | None:
        """The local file or folder this task reads (its first set `file_options`), or None;
        errors about the data name it."""
        return next((str(v) for v in (getattr(self, o, None) for o in self.file_options) if v is not None), None)

    def splits(self) -> dict[str, Split]:
        if self._splits is None:
            splits = self.build_splits()
            for name in ("train", "val", "test"):
                if name not in splits or len(splits[name]) == 0:
                    source = self.data_source()
                    raise DataError(f"{source + ': ' if source else ''}task {self.name!r}: the {name} split is empty; "
                                    "give it more data or change the split options")
            self._splits = splits
        return self._splits

    def eval_splits(self) -> list[str]:
        """Splits evaluated during and after training (besides the training loss)."""
        return ["val", "test"]

    # -- model
    def model_defaults(self) -> dict[str, Any]:
        """Model fields for this data: {'encoder': spec, 'head': spec, 'max_len': n, ...}.
        The encoder/head of a preset of the same modality/problem is kept, with the
        options named in `required_options` forced to the data's values."""
        raise NotImplementedError

    def baseline_preset(self) -> str:
        """The preset `compare` starts from when no models are named."""
        if self.modality == "tokens":
            return "gpt" if self.strategy.needs_causal else "bert"
        return BASELINE_PRESETS.get(self.modality, "transformer")

    @property
    def pooled_baseline_preset(self) -> str | None:
        """The baseline design pooling every token instead of reading a [CLS] token, for
        models whose mixers need the whole token grid ('vit-gap' for images); None when this
        task's inputs have no such variant. A property: the modality may be per instance."""
        return POOLED_BASELINE_PRESETS.get(self.modality)

    def train_defaults(self) -> dict[str, Any]:
        """Training settings that suit this data (a run config's `train` overrides them)."""
        return {}

    def required_options(self) -> dict[str, dict[str, Any]]:
        """Facts of the data every encoder/head must take (image size, classes, vocab)."""
        return {}

    # -- objective: the strategy's unless a task overrides them
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss of one batch (shapes: see the strategy)."""
        return self.strategy.loss(output, target)

    def compact(self, output: torch.Tensor, target: torch.Tensor, split: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Shrink one batch's output before it is kept for `metrics` (LM logits are huge:
        keep each real token's negative log-likelihood and hit instead). `split` names the
        split the batch is of, when the caller knows it, for a task whose metrics depend on
        a fact of the split (the `lm` task's bytes per token); None: unknown."""
        return self.strategy.compact(output, target)

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Metrics over a whole split: the `compact` outputs of every batch, concatenated."""
        return self.strategy.metrics(output, target)

    def trivial_baselines(self, splits: dict[str, Split]) -> dict[str, torch.nn.Module]:
        """What a comparison must beat: the strategy's baselines, fitted on the train split
        (a task whose inputs are scaled adds those that need its scaling)."""
        return self.strategy.trivial_baselines(splits["train"], splits["test"])

    # -- a trained model on raw inputs (infer/predict.py): what a run saves at training
    def preprocessing(self) -> dict[str, Any]:
        """JSON-able facts fitted on the data at training that turn raw inputs into model
        inputs (vocabulary, class names, column statistics, image size, series scaler): the
        run saves them as preprocessing.json. Called once the splits are built."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back what `preprocessing` gave, on an instance made from the run's options,
        without reading the training data."""

    def split_indices(self) -> dict[str, torch.Tensor]:
        """Which of `records()` each split holds (int64 positions), saved with the run as
        split.safetensors: the `_parts` build_splits recorded, or for data rebuilt from the
        options alone (no parts recorded) 0..n-1."""
        splits = self.splits()
        return dict(self._parts) if self._parts else {name: torch.arange(len(split)) for name, split in splits.items()}

    def records(self) -> list[Any] | None:
        """Every raw record of the data the task was trained on (tasks/raw.py's `Raw`, in
        the order `split_indices` counts), read afresh from the source; None when the data is
        generated, and `predict --split` rebuilds the split from the options instead."""
        return None

    def _no_raw_input(self) -> ConfigError:
        return ConfigError(f"task {self.name!r} takes no raw input (its data is generated); "
                           "score its splits with `anyformer predict RUN --split test`")

    def read_inputs(self, path: Path) -> list[Any]:
        """The raw records of a file a user gives `predict` (Raw values with where each came from)."""
        raise self._no_raw_input()

    def encode(self, records: list[Any]) -> tuple[Inputs, torch.Tensor | None]:
        """(model inputs, padding mask or None) of raw records, with the saved preprocessing;
        a record that does not fit is a DataError naming where it came from."""
        raise self._no_raw_input()

    def targets(self, records: list[Any]) -> torch.Tensor:
        """The targets of records that carry their labels (the run's own data)."""
        raise ConfigError(f"task {self.name!r} has no targets of raw records")

    def output_names(self) -> list[str]:
        """What the model's outputs stand for in `describe`: the class names (default)."""
        return [str(c) for c in getattr(self, "classes", [])]

    def describe(self, output: torch.Tensor, records: list[Any]) -> list[dict[str, Any]]:
        """Each record's prediction as a person reads it (the problem strategy's form)."""
        return self.strategy.describe(output, self.output_names())
