"""Typed run configs: the training settings and the one-file run (model + task + train)."""
from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from anyformer import registry
from anyformer.config import ComponentSpec, apply_overrides, read_yaml
from anyformer.errors import ConfigError, suggest
from anyformer.tasks.naming import task_spec


# The most examples one optimizer step may take: 500x the largest published batch (CLIP's
# 32,768). Past it a typo (1e11) would only iterate the data order for minutes before the
# memory estimate of the first step could refuse it.
MAX_BATCH = 2**24


class TrainConfig(BaseModel):
    """How a model is trained: optimiser, schedule, budget, evaluation and checkpoints."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(1000, ge=1, description="optimizer steps")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="examples per optimizer step (over all accumulation steps and processes)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    min_lr: float = Field(0.0, ge=0, description="learning rate at the end of a cosine or linear decay")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay (never on norms, biases, embeddings)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="decay after warmup")
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps")
    grad_clip: float | None = Field(1.0, description="clip the global gradient norm to this (None: no clipping)")
    eval_every: int = Field(200, ge=1, description="evaluate (and checkpoint) every N steps")
    eval_batch_size: int = Field(256, ge=1, description="batch size for evaluation")
    checkpoint_every: int | None = Field(None, ge=1, description="checkpoint every N steps (default: eval_every)")
    checkpoint_every_s: float | None = Field(60.0, gt=0, allow_inf_nan=False, description="also checkpoint when this many seconds passed since the last checkpoint, so a killed run loses at most that much work (None: by steps only)")
    log_every: int = Field(50, ge=1, description="write the training loss every N steps")
    metric: str | None = Field(None, description="metric for early stopping and model ranking (default: the task's primary metric)")
    early_stopping: int | None = Field(None, ge=1, description="stop after this many evaluations without improvement on val; the best weights are kept")
    max_time: float | None = Field(None, gt=0, description="stop training after this many seconds (then evaluate)")
    skip_nonfinite: int = Field(0, ge=0, description="batches with a non-finite loss that may be skipped before the run stops")
    seed: int = Field(0, description="seed for weights, data order and dropout")
    init: str | None = Field(None, description="start from this run directory's weights (trained or imported; or a .safetensors file): "
                             "every tensor matching by name and shape, the rest (a head for another task) fresh; without a model "
                             "in the config, the model is that run's")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast where this machine runs this model faster (a GPU with native bf16; a CPU where timing the model's own training step finds bf16 >= 1.2x fp32, e.g. a wide model on AVX512-BF16 or AMX units), else fp32; fp32 or bf16 force it (bf16 is very slow on CPUs without bf16 units)")
    compile: bool = Field(False, description="torch.compile the model")
    progress: bool = Field(True, description="show a progress bar on a terminal")
    track: list[Literal["attention"]] = Field(default_factory=list, description="what to log besides the metrics: 'attention' logs each "
                                              "layer's attention entropy and top weights on fixed validation examples at step 0 and every evaluation")

    def micro_batch(self, world: int = 1) -> int:
        """The most examples one forward/backward pass takes: the batch split over
        grad_accum micro-batches and `world` processes (what activations are sized by)."""
        return -(-self.batch_size // (self.grad_accum * world))


# Settings that change how a run executes, not what it is: a resumed run, or a finished one
# read back by compare, may differ from its config.yaml in these (max_time is a wall-clock
# guard: a resume may extend it, and seeds side by side get a longer one; skip_nonfinite is
# how a run stopped by a bad batch is continued; checkpoint cadence in time saves, never steers).
EXECUTION_FIELDS = frozenset({"progress", "device", "max_time", "skip_nonfinite", "checkpoint_every_s"})


def same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two resolved run configs (as config.yaml holds them) describe the same run."""
    strip = lambda d: {**d, "train": {k: v for k, v in d["train"].items() if k not in EXECUTION_FIELDS}}  # noqa: E731
    return strip(a) == strip(b)


class RunConfig(BaseModel):
    """One YAML file: the model (any preset/fields), the task and the training."""

    model_config = ConfigDict(extra="forbid")
    model: dict[str, Any] = Field(default_factory=dict, description="model fields (see ModelConfig), fitted to the task; "
                                  "an option that is no model field (num_classes) goes to the fitted component that takes it")
    task: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="digits"), description="task and its options")
    train: TrainConfig = Field(default_factory=TrainConfig, description="training settings")
    # Read by the pipeline above train and compress (anyformer.studies.pipeline), which
    # validates it; training itself never looks at it, so train imports nothing of compress.
    compress: Any = Field(default_factory=list, description="compression steps applied in order after training, "
                                "each {method: NAME, ...options} (`anyformer train` runs them)")


def _explain_run(err: pydantic.ValidationError) -> ConfigError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        parent = first["loc"][:-1]
        target: type[BaseModel] = TrainConfig if parent and parent[0] == "train" else RunConfig
        valid = sorted(target.model_fields)
        return ConfigError(f"{loc}: unknown field{suggest(str(first['loc'][-1]), valid)}; valid: {', '.join(valid)}")
    return ConfigError(f"{loc}: {first['msg']} (got {first.get('input')!r})")


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """`--set` keys -> (train fields, task options (key 'name' for `task=NAME`), model
    overrides): 'train.lr', 'task.p', 'task', 'model' (a preset), 'model.dim' or a bare model
    field/option."""
    train: dict[str, Any] = {}
    task: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head == "train" and rest:
            train[rest] = value
        elif head == "task":
            task[rest or "name"] = value
        elif head == "model" and not rest:
            model["preset"] = value  # `model=gpt`, as `model: gpt` in a run YAML
        else:
            model[rest if head == "model" else key] = value
    return train, task, model


def start_from_run(data: dict[str, Any], init: str) -> None:
    """`train.init: RUN` without a model of its own: RUN's model, minus its head when RUN
    was trained on another task (or imported, with none), since the task fits a new one;
    and RUN's tokenizer for a text task that names none."""
    if not Path(init).is_dir():
        return  # a bare safetensors file brings no config: the run's own model is used
    source = read_yaml(init)
    if not isinstance(source.get("model"), dict):
        raise ConfigError(f"train.init: {init}/config.yaml holds no model config; pass a run directory written by train or import-hf")
    own = source.get("task") if isinstance(source.get("task"), dict) else {}
    name = str(data["task"].get("name", "")).split(":")[0]
    base = {k: v for k, v in source["model"].items() if not (k == "head" and own.get("name") != name)}
    data["model"] = {**base, **data["model"]}
    tokenizer = own.get("tokenizer") or (source.get("imported") or {}).get("tokenizer")
    if tokenizer and "tokenizer" not in data["task"] and name in registry.list_components("task") \
            and "tokenizer" in inspect.signature(registry.get("task", name)).parameters:
        data["task"]["tokenizer"] = tokenizer


def run_config(source: str | Path | dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The one resolution path of a run: a YAML path or dict plus `--set`-style overrides
    ('train.lr', 'task.p', 'model.dim' or a bare model field/option) -> a validated RunConfig.
    Every override is merged before anything is validated: task options before the task
    is checked (so `task.path=` supplies a required path), model overrides into the model
    dict (an option of a component the preset brings, such as `ffn.ratio`, merges into it;
    the model is fitted to the task's data when training starts)."""
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, dict):
        data = copy.deepcopy(source)
    else:
        data = read_yaml(source)
    model = data.get("model") or {}
    data["model"] = {"preset": model} if isinstance(model, str) else dict(model)
    train_over, task_over, model_over = split_overrides(overrides or {})
    data["train"] = {**(data.get("train") or {}), **train_over}
    task = data.get("task") or "digits"
    task = {"name": task} if isinstance(task, str) else dict(task)
    data["task"] = {**task, **task_over}
    if data["train"].get("init") and not data["model"].get("preset") and "preset" not in model_over:
        start_from_run(data, str(data["train"]["init"]))
    data["model"] = apply_overrides(data["model"], model_over, route=False)
    name = data["task"].pop("name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"task: needs a name (see `anyformer list task`), got {name!r}")
    data["task"] = task_spec(name, **data["task"])
    try:
        return RunConfig.model_validate(data)
    except pydantic.ValidationError as err:
        inner = err.errors()[0].get("ctx", {}).get("error")
        if isinstance(inner, ConfigError):
            raise inner from None
        raise _explain_run(err) from None
