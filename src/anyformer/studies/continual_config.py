"""The sequence file of `anyformer continual SEQUENCE.yaml`: one model shared by every task,
a default train section, the probe that chooses each task's initialisation, and the tasks in
order, each a task spec with optional train overrides. Checked as a whole before any
training: an unknown field names its path with a did-you-mean, a task or train field is
checked as a run config checks it, with the task's index in the path.

    model: {preset: gpt, dim: 32, depth: 2, heads: 4}
    train: {steps: 300, lr: 1.0e-3, batch_size: 128}
    probe: {steps: 30}            # or {share: 0.1}: a tenth of each task's steps; metric: loss
    seeds: 3
    tasks:
      - {task: {name: modular, p: 23, seed: 0}, label: add-a}
      - {task: {name: modular, p: 23, seed: 1}, train: {steps: 200}}
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from anyformer import rundir
from anyformer.config import read_yaml
from anyformer.errors import ConfigError, suggest
from anyformer.train.config import RunConfig, TrainConfig, run_config


class ProbeConfig(BaseModel):
    """The cheap probe: a short fine-tune from every candidate, scored on the new task's val split."""

    model_config = ConfigDict(extra="forbid")
    steps: int | None = Field(None, ge=1, description="optimizer steps of each probe (default: `share` of the task's steps)")
    share: float = Field(0.1, gt=0, le=1, description="each probe's share of the task's training steps, when `steps` is not given")
    margin: float = Field(0.0, ge=0, description="a past checkpoint is chosen only when its probe beats scratch's by more than "
                          "this on the validation metric (0: the best probe wins, scratch on a tie)")
    # Loss, not the task's metric, by default: after a short probe a checkpoint that memorised
    # random labels can lead on accuracy yet end worse, while its overconfident mistakes
    # already show in the loss (measured in docs/continual.md).
    metric: str = Field("loss", description="the validation metric the probes are ranked by ('loss', lower better; or one "
                        "of the task's metrics, e.g. accuracy)")

    def steps_for(self, task_steps: int) -> int:
        return self.steps if self.steps is not None else max(1, round(self.share * task_steps))


class TaskEntry(BaseModel):
    """One task of the sequence: its spec, overrides of the default train section, a label."""

    model_config = ConfigDict(extra="forbid")
    task: Any = Field(..., description="the task spec: a name or {name: NAME, ...options}")
    train: dict[str, Any] = Field(default_factory=dict, description="train fields for this task over the sequence's train section")
    label: str | None = Field(None, description="the task's name in tables and folders (default: the task name and its options)")


class SequenceConfig(BaseModel):
    """A continual-learning sequence: a shared model trained on tasks one after another."""

    model_config = ConfigDict(extra="forbid")
    model: Any = Field(default_factory=dict, description="the model every task trains (a preset name or model fields), fitted to each task")
    train: dict[str, Any] = Field(default_factory=dict, description="train fields every task starts from (see TrainConfig)")
    probe: ProbeConfig = Field(default_factory=ProbeConfig, description="how each task's initialisation is chosen")
    seeds: int = Field(1, ge=1, description="independent repeats of the whole sequence (seed, seed + 1, ...)")
    tasks: list[TaskEntry] = Field(..., description="the tasks in the order they arrive (at least two)")

    @field_validator("tasks")
    @classmethod
    def _two_tasks(cls, tasks: list[TaskEntry]) -> list[TaskEntry]:
        if len(tasks) < 2:
            raise ValueError("a sequence needs at least two tasks (the first has no past checkpoint to start from)")
        return tasks


class SequenceTask(BaseModel):
    """A task of a checked sequence: its label and run config (train.init left to the job)."""

    label: str
    run: RunConfig


_MODELS = {(): SequenceConfig, ("probe",): ProbeConfig, ("tasks",): TaskEntry}


def _explain(err: pydantic.ValidationError) -> ConfigError:
    errors = err.errors()
    # An unknown field first: a misspelt `tasks` also reads as a missing one.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = first["loc"]
    path = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
    if first["type"] == "extra_forbidden":
        parent = tuple(p for p in loc[:-1] if not isinstance(p, int))
        valid = sorted(_MODELS.get(parent, SequenceConfig).model_fields)
        return ConfigError(f"{path}: unknown field{suggest(str(loc[-1]), valid)}; valid: {', '.join(valid)}")
    if first["type"] == "missing":
        return ConfigError(f"{path}: a required field is missing; valid fields: {', '.join(sorted(SequenceConfig.model_fields))}")
    message = first["msg"].removeprefix("Value error, ")
    return ConfigError(f"{path or 'sequence'}: {message}" + ("" if first["type"] == "value_error" else f" (got {first.get('input')!r})"))


def _check_train(fields: dict[str, Any], where: str) -> None:
    try:
        TrainConfig.model_validate(fields)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            valid = sorted(TrainConfig.model_fields)
            raise ConfigError(f"{where}.{field}: unknown field{suggest(field, valid)}; valid: {', '.join(valid)}") from None
        raise ConfigError(f"{where}.{field}: {first['msg']} (got {first.get('input')!r})") from None


def _label(spec: dict[str, Any]) -> str:
    shown = "-".join(f"{k}{v}" for k, v in spec.items() if k != "name")
    return rundir.slug(f"{spec['name']}-{shown}" if shown else spec["name"])


def parse_sequence(source: str | Path | dict[str, Any]) -> tuple[SequenceConfig, list[SequenceTask]]:
    """A sequence YAML path or dict -> (the checked sequence, each task's label and run
    config). Every task's run config is resolved here (task options, train fields, the model)
    so a mistake in the last task stops the job before the first trains."""
    data = copy.deepcopy(source) if isinstance(source, dict) else read_yaml(source)
    if not isinstance(data, dict):
        raise ConfigError(f"sequence: expected a mapping with model, train, probe, seeds and tasks, got {type(data).__name__}")
    try:
        seq = SequenceConfig.model_validate(data)
    except pydantic.ValidationError as err:
        raise _explain(err) from None
    model = {"preset": seq.model} if isinstance(seq.model, str) else dict(seq.model or {})
    if "init" in seq.train:
        raise ConfigError("train.init: a sequence chooses each task's initialisation itself; remove init")
    _check_train(seq.train, "train")
    steps, labels = [], set()
    for i, entry in enumerate(seq.tasks):
        if "init" in entry.train:
            raise ConfigError(f"tasks[{i}].train.init: a sequence chooses each task's initialisation itself; remove init")
        spec = {"name": entry.task} if isinstance(entry.task, str) else entry.task
        if not isinstance(spec, dict):
            raise ConfigError(f"tasks[{i}].task: expected a task name or {{name: NAME, ...options}}, got {spec!r}")
        _check_train({**seq.train, **entry.train}, f"tasks[{i}].train" if entry.train else "train")
        try:
            run = run_config({"model": copy.deepcopy(model), "task": copy.deepcopy(spec), "train": {**seq.train, **entry.train}})
        except ConfigError as err:
            raise ConfigError(f"tasks[{i}]: {err}") from None
        label = rundir.slug(entry.label) if entry.label else _label(spec)
        if label in labels:
            raise ConfigError(f"tasks[{i}]: label {label!r} is used twice; give each task its own label")
        labels.add(label)
        steps.append(SequenceTask(label=label, run=run))
    return seq, steps
