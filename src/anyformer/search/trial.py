"""One trial: the candidate a trial sampled, built, costed, trained under the search's budget
and evaluated, with compare's per-model evaluation (`measured_cost`: the profile of one
evaluation batch; `planned`/`seed_config`: the steps a budget buys at the measured step
time; the Trainer). Costs come first, before any training: the dominance pruner needs them.
A quantized candidate trains in float and is quantized after training (post-training
quantization, its policy from the space); when the space quantizes, every candidate's
latency is timed torch.compile'd, since torchao's int8 kernels pay only compiled.

The trial's folder (DIR/trials/NNNN, the number of the first attempt, so a retry of a
killed trial resumes its checkpoint) holds cost.json, plan.json, measures.json (its costs)
and run/ (an ordinary run directory)."""
from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from anyformer import catalog, rundir
from anyformer.bench import profile
from anyformer.compare.plan import measured_cost, planned, seed_config
from anyformer.compress.quantize import weight_bytes
from anyformer.errors import AnyformerError
from anyformer.nn.quantization import apply_quantization, needs_cuda, plan as quantization_plan
from anyformer.search.settings import Settings
from anyformer.tasks.base import Task
from anyformer.tasks.evaluation import evaluate
from anyformer.tasks.resolve import model_for_task
from anyformer.train.config import RunConfig, TrainConfig
from anyformer.train.loop import Trainer, with_task_defaults

MEASURES = "measures.json"


class Infeasible(AnyformerError):
    """The candidate cannot be built or trained as sampled (a config error, not a crash)."""


def trial_dir(search_dir: Path, number: int) -> Path:
    return search_dir / "trials" / f"{number:04d}"


def run_config(candidate: dict[str, Any], settings: Settings, task: Task) -> RunConfig:
    """The candidate as a run config, before the budget's plan sets its steps."""
    try:
        train = TrainConfig.model_validate({"seed": settings.seed, "device": settings.device, "progress": False,
                                            **settings.train, **candidate["train"]})
        return RunConfig.model_validate({"model": candidate["model"], "task": settings.task,
                                         "train": with_task_defaults(train, task)})
    except AnyformerError as err:
        raise Infeasible(str(err)) from None
    except ValueError as err:
        raise Infeasible(str(err).splitlines()[0]) from None


def _example(task: Task, batch: int):
    test = task.splits()["test"]
    return test.batch(torch.arange(min(batch, len(test))))


def costs(model_cfg, cost: dict[str, Any], policy: dict[str, Any] | None, settings: Settings, task: Task,
          train: TrainConfig, device: torch.device) -> dict[str, float]:
    """{params, latency_ms, memory_mb, size_mb} of the candidate, quantized when it is."""
    out = {"params": float(cost["params"]["total"]), "latency_ms": cost["forward"]["median_ms"],
           "memory_mb": cost["memory"]["forward_peak_bytes"] / 2**20}
    model = catalog.create(model_cfg).eval()
    out["size_mb"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    timed = model
    if policy is not None:
        layers = quantization_plan(model, policy)
        if needs_cuda(layers.values()) and device.type != "cuda":
            raise Infeasible("int4-weight runs on CUDA only (torchao 0.18 has no CPU int4 kernel); "
                             "drop it from the space's quantization or search with --device cuda")
        timed = copy.deepcopy(model)
        apply_quantization(timed, policy)
        out["size_mb"] = weight_bytes(model, timed, layers)["model_quantized"] / 2**20
    if settings.timing == "compiled":
        b = _example(task, train.eval_batch_size)
        # Inference only: fp32 (torchao's int8 kernels are for fp32 activations).
        prof = profile(timed.to(device), b.inputs, mask=b.mask, device=device, precision="fp32", compile=True,
                       train_step=False, flops=False, memory=False, repeats=10, warmup=2, budget_s=10.0)
        out["latency_ms"] = prof["forward"]["median_ms"]
    return out


def quality(run_dir: Path, summary: dict[str, Any], policy: dict[str, Any] | None, task: Task, train: TrainConfig,
            device: torch.device) -> dict[str, float]:
    """{quality (validation), test}: of the trained model, or of it quantized."""
    metric = summary["metric"]
    if policy is None:
        final = summary["final"]
        return {"quality": final["val"][metric], "test": final.get("test", {}).get(metric, float("nan"))}
    model, _ = catalog.load_run(run_dir)
    apply_quantization(model, policy)
    model.to(device).eval()
    return {split if split == "test" else "quality": evaluate(model, task, split, train.eval_batch_size, device, "fp32")[metric]
            for split in ("val", "test")}


def run_trial(candidate: dict[str, Any], folder: Path, settings: Settings, task: Task, device: torch.device,
              on_costs: Callable[[dict[str, float]], None],
              on_eval: Callable[[float, float], None]) -> dict[str, Any]:
    """Measure, train, evaluate one candidate; returns its measures ({quality, test, costs,
    steps, train_seconds}). `on_costs(costs)` before training; `on_eval(share, val quality)`
    after each evaluation (it raises to prune). Errors of the candidate raise Infeasible."""
    run = run_config(candidate, settings, task)
    policy = candidate.get("quantization")
    try:
        model_cfg = model_for_task(run.model, task)
        folder.mkdir(parents=True, exist_ok=True)
        cost = measured_cost(folder, model_cfg, task, run.train, device, settings.seed)
        path = folder / MEASURES
        measured = rundir.read_json(path) if path.exists() else costs(model_cfg, cost, policy, settings, task, run.train, device)
        rundir.atomic_write_json(path, measured)
    except Infeasible:
        raise
    except AnyformerError as err:
        raise Infeasible(str(err)) from None
    on_costs(measured)
    plan = planned(folder, cost, run.train, settings.budget_s, settings.steps)
    run.train = seed_config(run.train, plan, settings.seed, "warmup_steps" in {**settings.train, **candidate["train"]})
    metric = run.train.metric or task.primary_metric
    run_dir = folder / "run"
    if (run_dir / "summary.json").exists():
        summary = rundir.read_json(run_dir / "summary.json")
    else:
        def report(step: int, results: dict[str, dict[str, float]]) -> None:
            value = results.get("val", {}).get(metric)
            if value is not None:
                on_eval(round(step / plan["planned_steps"], 2), value)

        trainer = Trainer(run, run_dir, resume=rundir.has_checkpoint(run_dir), task=task, on_eval=report)
        summary = trainer.fit()
    scores = quality(run_dir, summary, policy, task, run.train, device)
    return {**scores, **measured, "metric": metric, "steps": summary["steps"], "train_seconds": summary["train_seconds"],
            "stopped": summary["stopped"]}
