"""The main job: train several variants on one task under the same budget, profile each,
and lay quality beside cost. A killed compare resumes: finished models are read back,
a half-trained one continues from its checkpoint.

Model specs: a preset (`vit`), a preset with another token mixer (`vit+linear`), or a
YAML file (its stem names the row).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from anyformer import catalog, registry, rundir
from anyformer.bench import profile
from anyformer.config import ComponentSpec, apply_overrides, looks_like_path, read_yaml
from anyformer.errors import AnyformerError, ConfigError
from anyformer.presets import load_preset
from anyformer.report.html import write_report
from anyformer.report.pareto import pareto_front
from anyformer.report.table import write_csv
from anyformer.runtime import resolve_device
from anyformer.tasks.base import Task
from anyformer.tasks.resolve import model_for_task
from anyformer.train.config import RunConfig, TrainConfig
from anyformer.train.loop import Trainer, with_task_defaults


@dataclass
class ModelSpec:
    name: str
    model: dict[str, Any]


def parse_model_spec(text: str) -> ModelSpec:
    text = text.strip()
    if looks_like_path(text):
        data = read_yaml(text)
        return ModelSpec(Path(text).stem, copy.deepcopy(data.get("model", data)))
    preset, _, mixer = text.partition("+")
    model: dict[str, Any] = {"preset": preset}
    if mixer:
        registry.get("mixer", mixer)  # fail early, with a did-you-mean
        model["mixer"] = mixer
    load_preset(preset)  # fail early, with a did-you-mean
    return ModelSpec(text, model)


def model_dict(spec: ModelSpec, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The spec's model fields with the overrides every model shares (dim, depth, ...) merged
    in, as a run config holds them."""
    return apply_overrides(spec.model, overrides or {}, route=False)


def default_models(task: Task, overrides: dict[str, Any] | None = None) -> list[ModelSpec]:
    """The task's baseline preset, and the same model with every efficient mixer (one that
    declares itself `subquadratic`) that can be built for this task's data. Mixers that the
    baseline cannot carry (those that need every token pooled, no [CLS] token) run on the
    task's `pooled_baseline_preset` (`vit-gap` for images), which joins the set as a row of
    its own so the pooling change is measured too."""
    def builds(spec: ModelSpec) -> bool:
        try:
            catalog.create(model_for_task(model_dict(spec, overrides), task))
            return True
        except AnyformerError:
            return False

    base = task.baseline_preset()
    alt = task.pooled_baseline_preset
    specs = [ModelSpec(base, {"preset": base})]
    for name in registry.list_components("mixer"):
        if not registry.get("mixer", name).subquadratic:
            continue
        for preset in (base, alt):
            spec = ModelSpec(f"{preset}+{name}", {"preset": preset, "mixer": name}) if preset else None
            if spec is not None and builds(spec):
                if preset == alt and all(s.name != alt for s in specs):
                    specs.insert(1, ModelSpec(alt, {"preset": alt}))
                specs.append(spec)
                break
    return specs


def _profile_inputs(task: Task, batch: int):
    test = task.splits()["test"]
    b = test.batch(torch.arange(min(batch, len(test))))
    return b.inputs, b.mask


def _cost(model, task: Task, batch: int, device: torch.device, precision: str) -> dict[str, Any]:
    """The model's cost on a batch of test data, in the precision it is trained in."""
    inputs, mask = _profile_inputs(task, batch)
    return profile(model, inputs, mask=mask, device=device, precision=precision, repeats=5, warmup=2, budget_s=20.0)


def _row(spec: ModelSpec, summary: dict[str, Any], cost: dict[str, Any]) -> dict[str, Any]:
    metric = summary["metric"]
    final = summary["final"]
    fwd = cost.get("forward", {})
    return {
        "model": spec.name,
        "quality": final.get("test", {}).get(metric, float("nan")),
        "val": final.get("val", {}).get(metric, float("nan")),
        "metric": metric,
        "higher_is_better": summary["higher_is_better"],
        "params": cost["params"]["total"],
        "params_non_embedding": cost["params"].get("non_embedding"),
        "flops_per_sample": cost.get("flops", {}).get("forward_per_sample"),
        "latency_ms": fwd.get("median_ms"),
        "latency_batch": cost.get("batch"),
        "train_step_ms": cost.get("forward_backward", {}).get("median_ms"),
        "peak_memory_bytes": cost.get("memory", {}).get("forward_peak_bytes"),
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "all_metrics": final,
    }


def compare(task_spec: ComponentSpec, models: list[str] | None = None, *, budget_s: float | None = None,
            steps: int | None = None, out: str | Path = "runs/compare", train_overrides: dict[str, Any] | None = None,
            model_overrides: dict[str, Any] | None = None, device: str = "auto", seed: int = 0,
            console=None) -> list[dict[str, Any]]:
    """Train, evaluate and profile every model; returns the rows (also written to `out`).
    `model_overrides` (e.g. dim, depth) apply to every model, so they compare at one size."""
    console = console or Console(stderr=True)
    task: Task = registry.build("task", task_spec.name, **task_spec.options)
    task.splits()
    specs = [parse_model_spec(m) for m in models] if models else default_models(task, model_overrides)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"--models names a model twice: {', '.join(names)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    base_train = with_task_defaults(TrainConfig.model_validate({"seed": seed, "device": device, **(train_overrides or {})}), task)
    rows: list[dict[str, Any]] = []
    for i, spec in enumerate(specs, 1):
        run_dir = out / rundir.slug(spec.name)
        done = run_dir / "summary.json"
        if done.exists() and (run_dir / "cost.json").exists():
            console.print(f"[{i}/{len(specs)}] {spec.name}: finished earlier, read back")
            rows.append(_row(spec, rundir.read_json(done), rundir.read_json(run_dir / "cost.json")))
            continue
        train_cfg = base_train.model_copy()
        model = model_dict(spec, model_overrides)
        model_cfg = model_for_task(model, task)
        cost_path = run_dir / "cost.json"
        run_dir.mkdir(parents=True, exist_ok=True)
        if cost_path.exists():
            cost = rundir.read_json(cost_path)
        else:
            torch.manual_seed(seed)
            cost = _cost(catalog.create(model_cfg), task, train_cfg.batch_size, dev, train_cfg.precision)
            rundir.atomic_write_json(cost_path, cost)
        if budget_s is not None:
            # Same wall-clock budget for every model: the step count comes from its measured
            # training-step time, so the schedule decays over the steps it can afford.
            step_s = cost["forward_backward"]["median_ms"] / 1e3 * 1.25
            fit = max(10, int(budget_s / step_s))
            train_cfg = train_cfg.model_copy(update={"steps": fit, "max_time": budget_s * 1.5,
                                                     "eval_every": max(10, fit // 5)})
        if steps is not None:
            train_cfg = train_cfg.model_copy(update={"steps": steps, "eval_every": max(1, min(train_cfg.eval_every, steps))})
        run = RunConfig(model=model, task=task_spec, train=train_cfg)
        resume = rundir.has_checkpoint(run_dir)
        console.print(f"[{i}/{len(specs)}] {spec.name}: training {train_cfg.steps} steps" + (" (resuming)" if resume else ""))
        started = time.perf_counter()
        trainer = Trainer(run, run_dir, resume=resume, task=task)
        summary = trainer.fit()
        console.print(f"    {summary['metric']} {summary['final'].get('test', {}).get(summary['metric'], float('nan')):.4f}"
                      f" in {time.perf_counter() - started:.0f} s")
        rows.append(_row(spec, summary, cost))
        write_results(out, rows, task)
    return write_results(out, rows, task)


def mark_pareto(rows: list[dict[str, Any]]) -> None:
    """Flag rows on the quality-vs-latency and quality-vs-params fronts."""
    if not rows:
        return
    higher = rows[0]["higher_is_better"]
    sign = 1.0 if higher else -1.0
    for cost_key, flag in (("latency_ms", "pareto_latency"), ("params", "pareto_params")):
        points = [(sign * r["quality"] if not math.isnan(r["quality"]) else -math.inf, r[cost_key] or math.inf) for r in rows]
        front = pareto_front(points)
        for r, on in zip(rows, front):
            # A NaN score is no quality at all: the cheapest such model would otherwise be
            # undominated (nothing is cheaper) and marked on the front.
            r[flag] = on and not math.isnan(r["quality"])


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not rows:
        return rows
    higher = rows[0]["higher_is_better"]
    key = lambda r: (math.isnan(r["quality"]), -r["quality"] if higher else r["quality"])  # noqa: E731
    return sorted(rows, key=key)


def write_results(out: Path, rows: list[dict[str, Any]], task: Task) -> list[dict[str, Any]]:
    """Rank, mark the fronts and write results.json / results.csv / report.html; returns
    the ranked rows."""
    rows = sort_rows(rows)
    mark_pareto(rows)
    rundir.atomic_write_json(out / "results.json", {"task": task.name, "rows": rows})
    write_csv(out / "results.csv", rows)
    curves = {r["model"]: rundir.read_metrics(out / rundir.slug(r["model"])) for r in rows}
    write_report(out, rows, task.name, curves)
    return rows
