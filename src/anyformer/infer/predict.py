"""A trained run on raw inputs: `af.predictor(RUN)` and `anyformer predict`. The run's own
preprocessing (tasks/preprocessing.py) turns texts, table rows, images and series into
model inputs exactly as training did, so `score('test')` on the original file gives the
run's test metrics back, bit for bit."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from anyformer import catalog, registry, rundir
from anyformer.errors import ConfigError, DataError, unknown
from anyformer.runtime import resolve_device
from anyformer.tasks import preprocessing
from anyformer.tasks.base import Split
from anyformer.tasks.evaluation import evaluate, outputs
from anyformer.tasks.raw import Raw


class Predictor:
    """A run's model with its task's saved preprocessing. Call it on raw values (texts,
    {column: value} rows, image arrays, series [T, C]) or give it files (`predict_files`);
    `score(split)` evaluates one of the run's own splits from its original data."""

    def __init__(self, run_dir: str | Path, device: str = "auto", batch_size: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.model, self.config = catalog.load_run(run_dir)
        if self.config.get("task") is None:
            raise ConfigError(f"{run_dir} was imported and trained on no task: it has no preprocessing to predict with; "
                              "fine-tune it on a task first (train.init)")
        self.saved = preprocessing.read(run_dir)
        self.task = self._task()
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.batch_size = batch_size or (self.config.get("train") or {}).get("eval_batch_size", 256)
        self.precision = rundir.run_precision(run_dir, self.config)

    def _task(self, data: str | Path | None = None):
        """The run's task with its saved preprocessing restored (its data file `data`, when
        given, in place of the one it trained on)."""
        spec = preprocessing.task_options(self.config["task"], self.saved, self.run_dir)
        if data is not None:
            option = next(iter(registry.get("task", spec["name"]).file_options), None)
            if option is None:
                raise ConfigError(f"task {spec['name']!r} reads no file: --data does not apply")
            spec[option] = str(data)
        task = catalog.build_task(spec)
        task.restore(self.saved["state"])
        return task

    @property
    def kind(self) -> str | None:
        """What raw input the run reads: 'text', 'table', 'images', 'series' (None: none)."""
        return self.task.raw_input

    def predict_records(self, records: list[Raw]) -> list[dict[str, Any]]:
        """One prediction per record, each with 'input': where the record came from."""
        if not records:
            raise DataError("no inputs to predict on; give at least one")
        inputs, mask = self.task.encode(records)
        data = Split(inputs, torch.zeros(len(records)), mask)
        out = outputs(self.model, data, self.batch_size, self.device, self.precision)
        return [{"input": r.where, **p} for r, p in zip(records, self.task.describe(out, records))]

    def __call__(self, inputs: list[Any]) -> list[dict[str, Any]]:
        return self.predict_records([Raw(v, f"input {i}") for i, v in enumerate(inputs)])

    def read_files(self, paths: list[str | Path]) -> list[Raw]:
        """The raw records of the given files, in order, as the run's task reads them."""
        return [r for p in paths for r in self.task.read_inputs(Path(p).expanduser())]

    def predict_files(self, paths: list[str | Path]) -> list[dict[str, Any]]:
        """Predictions for every record of the given files, in order."""
        return self.predict_records(self.read_files(paths))

    def split(self, name: str, data: str | Path | None = None) -> Split:
        """The run's split `name` made again from its original data (or from `data`, the
        same file moved) through the raw-input path and the saved preprocessing."""
        indices = preprocessing.split_indices(self.run_dir)
        if name not in indices:
            raise unknown("split", name, list(indices))
        task = self.task if data is None else self._task(data)
        self._check_data(task)
        records = task.records()
        index = indices[name]
        if records is None:  # generated data: rebuilt from the options, and it must be what trained
            rebuilt = task.splits()[name]
            if len(rebuilt) != len(index):
                raise DataError(f"task {task.name!r} makes {len(rebuilt)} {name} examples now, the run had {len(index)}; "
                                "its data changed since training")
            return rebuilt
        if len(index) and int(index.max()) >= len(records):
            raise DataError(f"{task.data_source()}: {len(records)} records, but the run's {name} split reaches record "
                            f"{int(index.max())}; the data changed since training")
        chosen = [records[i] for i in index.tolist()]
        inputs, mask = task.encode(chosen)
        return Split(inputs, task.targets(chosen), mask)

    def _check_data(self, task) -> None:
        recorded = self.saved.get("data")
        current = preprocessing.data_file(task)
        if recorded and current is not None and preprocessing.data_digest(current) != recorded["sha256"]:
            raise DataError(f"{current}: the file changed since the run trained on it (SHA-256 differs from "
                            f"{recorded['path']}'s); its split would not be the run's: give the file it trained on")

    def score(self, split: str = "test", data: str | Path | None = None) -> dict[str, float]:
        """The task's metrics (and loss) on the run's `split`, from the original data."""
        made = self.split(split, data)
        return evaluate(self.model, self.task, split, self.batch_size, self.device, self.precision, data=made)


def predictor(run_dir: str | Path, device: str = "auto", batch_size: int | None = None) -> Predictor:
    """A run directory's model with its saved preprocessing, ready for raw inputs."""
    return Predictor(run_dir, device, batch_size)
