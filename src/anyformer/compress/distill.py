"""Knowledge distillation (`--method distill`): the run being compressed is the teacher; a
student (`--student`: a preset name, a YAML path, or a dict of model fields) is built for
the teacher's task and trained by the ordinary training loop, with the ScaleKD-lite
objective (distill_loss.py; "ScaleKD: Strong Vision Transformers Could Be Excellent
Teachers", Fan et al. 2024) in place of the task loss. The same student is also trained
alone (same seed, steps and settings; `alone=False` skips it), so the notes hold the
teacher's test metrics, the student alone and the student distilled.

Both training runs are kept under --out (`distill/`, `alone/`: ordinary run directories with
their metrics); a command killed midway continues them when run again with the same options.
The student trains with the teacher run's own train settings (lr, batch, seed, ...) except
its init, max_time and early stopping (both students run the same steps), for `steps`
(default: the teacher's) on the job's device; under an imported teacher (no train settings)
with the task's defaults. Defaults: alpha 0.5 and T 1 (the reference code's), beta 0.1 (at 1
the feature term outweighed the task loss in short digits runs, docs/distill.md), the last
layer of each model paired, TPP on."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from anyformer import catalog, rundir
from anyformer.compress.data import Judged
from anyformer.compress.distill_loss import SOFTMAX_PROBLEMS, DistillObjective
from anyformer.errors import ConfigError
from anyformer.tasks.base import Batch, Task
from anyformer.tasks.resolve import check_fits, model_for_task, raw_model_dict
from anyformer.train.config import run_config
from anyformer.train.loop import Trainer

PAPER = "ScaleKD: Strong Vision Transformers Could Be Excellent Teachers (Fan et al. 2024)"
# The training runs kept under --out, and the file that records what a distillation run was started with.
DISTILLED, ALONE, STARTED = "distill", "alone", "distill.json"


def _number(value: Any, option: str, low: float, high: float | None = None, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    ok = ok and (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        bounds = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}{']' if high is not None else ')'}"
        raise ConfigError(f"{option} must be a number in {bounds}, got {value!r}")
    return float(value)


def parse_layers(layers: Any) -> list[tuple[int, int]]:
    """'S:T[,S:T...]' or a list of 'S:T' / [S, T] -> [(student layer, teacher layer)];
    negative indices count from the last layer (-1:-1, the default, pairs the last two)."""
    items = layers.split(",") if isinstance(layers, str) else layers
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"--layers must be pairs S:T (student layer:teacher layer), e.g. -1:-1 or 0:1,1:3; got {layers!r}")
    pairs = []
    for item in items:
        parts = item.split(":") if isinstance(item, str) else item
        try:
            s, t = (int(p) for p in parts)
        except (TypeError, ValueError):
            raise ConfigError(f"--layers: {item!r} is no pair S:T of layer indices (e.g. -1:-1 or 0:1,1:3)") from None
        pairs.append((s, t))
    return pairs


def check_options(student: Any, steps: Any, alpha: Any, temperature: Any, feature_weight: Any, layers: Any,
                  perception: Any, alone: Any) -> list[tuple[int, int]]:
    """Every option checked before any work; the layer pairs (indices not yet resolved)."""
    if student is None:
        raise ConfigError("distill needs --student: a preset name (see `anyformer list preset`), a YAML path or a dict of model fields")
    if not isinstance(student, (str, dict)):
        raise ConfigError(f"--student must be a preset name, a YAML path (a str) or a dict of model fields, got {type(student).__name__}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ConfigError(f"--steps must be an integer >= 1 (the student's training steps), got {steps!r}")
    _number(alpha, "--alpha", 0.0, 1.0)
    _number(temperature, "--temperature", 0.0, low_open=True)
    _number(feature_weight, "--feature-weight", 0.0)
    for value, option in ((perception, "--perception"), (alone, "--alone")):
        if not isinstance(value, bool):
            raise ConfigError(f"{option} must be true or false, got {value!r}")
    return parse_layers(layers)


def _resolve(pairs: list[tuple[int, int]], s_depth: int, t_depth: int) -> list[tuple[int, int]]:
    out = []
    for s, t in pairs:
        for index, depth, who in ((s, s_depth, "student"), (t, t_depth, "teacher")):
            if not -depth <= index < depth:
                raise ConfigError(f"--layers {s}:{t}: {who} layer {index} outside 0..{depth - 1} (the {who} has {depth} layers)")
        out.append((s % s_depth, t % t_depth))
    return out


def student_config(student: str | dict[str, Any], task: Task) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the user's student fields, the student's resolved model config for `task`); what
    the student sets against the task's data (classes, vocabulary, image size) is refused."""
    try:
        raw = raw_model_dict(student)
        resolved = model_for_task(raw, task).to_dict()
        # Fitting the task overrides the data's facts a component sets (a head of 12 classes for
        # 10) and keeps a bare option's: either way the user asked for another output space.
        check_fits({k: v for k, v in raw.items() if k != "preset"}, task)
        check_fits(resolved, task)
        return raw, resolved
    except ConfigError as err:
        raise ConfigError(f"--student: {err}") from None


def hidden_states(model: nn.Module, batch: Batch, who: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(output, every layer's output) of `model` on `batch`, or a ConfigError naming `who`."""
    try:
        with torch.no_grad():
            result = model(batch.inputs, **({"mask": batch.mask} if batch.mask is not None else {}), return_hidden=True)
    except TypeError:
        result = None
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], list) and result[1]):
        raise ConfigError(f"the {who}'s arch {type(model).__name__} returns no hidden states; distill needs "
                          "forward(..., return_hidden=True) (every arch of `anyformer list arch` has it)")
    return result


def _perceivable(teacher: nn.Module) -> bool:
    """Whether TPP can run the teacher's later layers alone: the plain layer-stack arch."""
    config = getattr(teacher, "config", None)
    stack = getattr(teacher, "stack", None)
    return config is not None and config.arch.name == "stack" and stack is not None and not stack.transitions


def _train_settings(run: Path | None, steps: int | None, device: torch.device) -> dict[str, Any]:
    """The teacher run's train settings, the steps and the device; not its init (the student
    starts fresh), nor what would stop the two students after different numbers of steps."""
    own = dict(rundir.read_config(run).get("train") or {}) if run is not None else {}
    for key in ("init", "max_time", "early_stopping"):
        own.pop(key, None)
    return {**own, **({"steps": steps} if steps is not None else {}), "device": str(device)}


def _check_started(folder: Path, started: dict[str, Any]) -> None:
    """A distillation run under --out continues only with what it was started with."""
    path = folder / STARTED
    if path.exists():
        before = rundir.read_json(path)
        changed = [k for k in started if before.get(k) != started[k]]
        if changed:
            raise ConfigError(f"{folder} holds a distillation started with other {changed[0]} ({before.get(changed[0])!r}); "
                              "give the same options or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_json(path, started)


def _fit(source: dict[str, Any], folder: Path, task: Task, objective: nn.Module | None = None) -> tuple[Trainer, dict[str, Any]]:
    # A folder with a checkpoint is a run this command started before: it goes on from there.
    trainer = Trainer(run_config(copy.deepcopy(source)), folder, resume=(folder / "state.json").exists(),
                      task=task, objective=objective)
    return trainer, trainer.fit()


def config_task(run: Path | None) -> dict[str, Any]:
    """The task the teacher run was trained on (its config's `task`)."""
    task = rundir.read_config(run).get("task") if run is not None else None
    if not task:
        raise ConfigError(f"{run} was trained on no task (an imported checkpoint): pass --data TASK to distill on")
    return dict(task)


def _row(summary: dict[str, Any], folder: Path) -> dict[str, Any]:
    return {"run": str(folder), "parameters": summary["parameters"], "steps": summary["steps"],
            "train_seconds": summary["train_seconds"], "test": summary["final"]["test"]}


def plan(teacher: nn.Module, student_cfg: dict[str, Any], task: Task, device: torch.device,
         pairs: list[tuple[int, int]], perception: bool, where: str) -> tuple[list[tuple[int, int]], list, list[bool], int]:
    """From two training examples: the layer pairs resolved, each pair's hidden sizes
    ((Ls, Ds), (Lt, Dt)), whether each runs through the teacher's later layers (TPP), and the
    projectors' heads; refused when the outputs differ. The probe student is thrown away."""
    probe = task.splits()["train"].batch(torch.arange(min(2, len(task.splits()["train"])))).to(device)
    t_out, t_hidden = hidden_states(teacher.eval(), probe, "teacher")
    with torch.random.fork_rng(devices=[]):  # the Trainer seeds its own student
        s_out, s_hidden = hidden_states(catalog.create(student_cfg).to(device).eval(), probe, "student")
    if s_out.shape[1:] != t_out.shape[1:]:  # the student fits the task (student_config): the teacher does not
        shape = lambda x: list(x.shape[1:])  # noqa: E731
        raise ConfigError(f"{where}: its outputs are {shape(t_out)} per example, the student's for task {task.name!r} "
                          f"{shape(s_out)}; distill a teacher on the task it was trained for")
    pairs = _resolve(pairs, len(s_hidden), len(t_hidden))
    perceive = [perception and t < len(t_hidden) - 1 for _, t in pairs]
    if any(perceive) and not _perceivable(teacher):
        arch = getattr(getattr(teacher, "config", None), "arch", None)
        raise ConfigError(f"--perception: the teacher's arch {arch.name if arch else type(teacher).__name__!r} cannot run "
                          "its later layers alone (TPP needs the plain layer stack without transitions); pair its last "
                          "layer (--layers S:-1) or pass --no-perception")
    shapes = [(tuple(s_hidden[s].shape[1:]), tuple(t_hidden[t].shape[1:])) for s, t in pairs]
    heads = getattr(getattr(teacher, "config", None), "heads", 1)
    return pairs, shapes, perceive, heads if all(dt % heads == 0 for _, (_, dt) in shapes) else 1


def apply(model: nn.Module, config: dict[str, Any], judge: Judged, device: torch.device,
          student: str | dict[str, Any] | None = None, steps: int | None = None, alpha: float = 0.5,
          temperature: float = 1.0, feature_weight: float = 0.1, layers: str | Sequence[Any] = "-1:-1",
          perception: bool = True, alone: bool = True, run: Path | None = None, out: Path | None = None,
          data: str | None = None) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(the student distilled from teacher `model`, its model config, notes: the teacher's,
    the student alone's and the distilled student's test metrics, the objective). `run`,
    `out`, `data`: the job's input run, --out (where both training runs are kept) and --data."""
    pairs = check_options(student, steps, alpha, temperature, feature_weight, layers, perception, alone)
    task = judge.task
    if task is None:
        raise ConfigError("distill trains the student on a task: pass --data TASK (a task name, `anyformer list task`), "
                          "not a file of sentences")
    if out is None:
        raise ConfigError("distill keeps its training runs in the output directory: call it through anyformer.compress (--out)")
    if alpha and task.problem not in SOFTMAX_PROBLEMS:
        raise ConfigError(f"--alpha {alpha}: logit distillation needs class or token logits; task {task.name!r} is a "
                          f"{task.problem} problem: set --alpha 0 to distill features only")
    where = f"--data {data}" if data is not None else f"the teacher {run}"
    try:
        check_fits(config, task)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    raw, student_cfg = student_config(student, task)

    pairs, shapes, perceive, heads = plan(model, student_cfg, task, device, pairs, perception and bool(feature_weight), where)

    train = _train_settings(run, steps, device)
    source = {"model": raw, "task": data if data is not None else config_task(run), "train": train}
    seed = int(train.get("seed", 0))
    with torch.random.fork_rng(devices=[]):  # the projectors' own draw: the student's is the Trainer's seed
        torch.manual_seed(seed)
        objective = DistillObjective(model, task, alpha, temperature, feature_weight, pairs, shapes, perceive, heads)
    out = Path(out)
    started = {"teacher": str(Path(run).resolve()) if run is not None else None, "alpha": alpha, "temperature": temperature,
               "feature_weight": feature_weight, "layers": [list(p) for p in pairs], "perception": perceive}
    _check_started(out / DISTILLED, started)
    trainer, distilled = _fit(source, out / DISTILLED, task, objective)
    notes: dict[str, Any] = {
        "paper": PAPER, "metric": judge.metric, "steps": distilled["steps"],
        "teacher": {"run": str(run), "parameters": sum(p.numel() for p in model.parameters()),
                    "test": judge.quality(model, device)},
        "distilled": {**_row(distilled, out / DISTILLED), "projector_parameters": sum(p.numel() for p in objective.parameters())},
        "alone": "skipped (alone=False)",
        "objective": {"alpha": alpha, "temperature": temperature, "feature_weight": feature_weight,
                      "layers": [list(p) for p in pairs], "perception": perceive, "projector_heads": heads},
    }
    if alone:
        _, summary = _fit(source, out / ALONE, task)
        notes["alone"] = _row(summary, out / ALONE)
    student_model = trainer.model.eval()
    return student_model, trainer.config_dict["model"], notes

