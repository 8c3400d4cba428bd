"""The main job: train several variants on one task under the same budget, K seeds each,
profile each, and lay quality (the mean over seeds, with a 95% interval) beside cost and
beside the task's trivial baselines. What the numbers mean (intervals, ties, fronts,
flags, the recommendation) is anyformer.verdict's; this module runs the work.

`out` holds, per model, <model-slug>/cost.json (measured once), <model-slug>/plan.json
(the step count every seed trains, computed once) and <model-slug>/seed-<k>/ (one run
directory per seed, with the per-example test outcomes beside its summary); then
results.json, results.csv and report.html. A killed compare resumes: finished seeds are
read back, a half-trained one continues from its checkpoint.

Model specs: a preset (`vit`), a preset with another token mixer (`vit+linear`), or a
YAML file (its stem names the row).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from anyformer import catalog, registry, rundir
from anyformer.bench import profile
from anyformer.budget import JobClock, budget_note, format_duration, run_budget
from anyformer.config import ComponentSpec, apply_overrides, looks_like_path, read_yaml
from anyformer.errors import AnyformerError, ConfigError, unknown
from anyformer.presets import load_preset
from anyformer.report.html import write_report
from anyformer.runtime import resolve_device
from anyformer.tasks.base import Task
from anyformer.tasks.resolve import model_for_task
from anyformer.train.config import RunConfig, TrainConfig
from anyformer.train.evaluate import predict_split
from anyformer.train.loop import Trainer, resolved_config, with_task_defaults
from anyformer.verdict import (LATENCY_SPREAD, OPTIMIZE, Constraints, Evidence, baseline_row, judge, mark_pareto, model_row,
                               seed_record, write_csv)

__all__ = ["ModelSpec", "compare", "default_models", "mark_pareto", "parse_model_spec"]

OUTCOMES = "test_outcomes.safetensors"
# Measured step time x this = the planned time per step (evaluation, logging, data).
STEP_OVERHEAD = 1.25
# A budgeted seed stops at 1.5x its planned time plus this: a run's fixed costs (first step, evaluation).
MAX_TIME_SLACK_S = 5.0


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


# ---------------------------------------------------------------- cost and plan (once per model)

def _cost(model, task: Task, batch: int, device: torch.device, precision: str) -> dict[str, Any]:
    """The model's cost on a batch of test data, in the precision it is trained in."""
    test = task.splits()["test"]
    b = test.batch(torch.arange(min(batch, len(test))))
    return profile(model, b.inputs, mask=b.mask, device=device, precision=precision, repeats=5, warmup=2, budget_s=20.0)


def _spread(cost: dict[str, Any]) -> float:
    fwd = cost.get("forward", {})
    return fwd["max_ms"] / fwd["min_ms"] if fwd.get("min_ms") else 1.0


def measured_cost(model_dir: Path, model_cfg, task: Task, train_cfg: TrainConfig, device: torch.device,
                  seed: int) -> dict[str, Any]:
    """cost.json of the model folder, measured once. Latency repeats that disagree beyond
    LATENCY_SPREAD (max / min: a noisy moment of the machine) are measured once more and
    the steadier measurement kept; the verdict flags it if its repeats still disagree."""
    path = model_dir / "cost.json"
    if path.exists():
        return rundir.read_json(path)
    torch.manual_seed(seed)
    model = catalog.create(model_cfg)
    cost = _cost(model, task, train_cfg.batch_size, device, train_cfg.precision)
    if _spread(cost) > LATENCY_SPREAD:
        again = _cost(model, task, train_cfg.batch_size, device, train_cfg.precision)
        cost = {**min(cost, again, key=_spread), "remeasured": True}  # the steadier of the two
    rundir.atomic_write_json(path, cost)
    return cost


def step_seconds(cost: dict[str, Any]) -> float:
    return cost["forward_backward"]["median_ms"] / 1e3 * STEP_OVERHEAD


def planned(model_dir: Path, cost: dict[str, Any], train_cfg: TrainConfig, budget_s: float | None,
            steps: int | None, total_budget_s: float | None = None, share_s: float | None = None) -> dict[str, Any]:
    """plan.json: the steps every seed of the model trains, computed once from its measured
    step time (the same wall-clock budget for every model, so the schedule decays over the
    steps it can afford) and reused on resume; a different request for the same folder is
    an error, since finished seeds would be read back under another plan. `share_s`: each
    seed's share of a total budget (given, or the default cap), in place of `budget_s`."""
    request = {"budget_s": budget_s, "total_budget_s": total_budget_s, "steps": steps}
    run_budget_s = budget_s if share_s is None else share_s
    path = model_dir / "plan.json"
    if path.exists():
        plan = rundir.read_json(path)
        if {k: plan.get(k) for k in request} != request:
            raise ConfigError(f"{model_dir} was planned for {plan.get('budget_s')} s / {plan.get('steps')} steps, not "
                              f"{budget_s} s / {steps} steps (total {total_budget_s}); use the same "
                              "--budget/--total-budget/--steps or another --out")
        return plan
    n = train_cfg.steps
    if run_budget_s is not None:
        n = max(10, int(run_budget_s / step_seconds(cost)))
    n = steps if steps is not None else n
    plan = {**request, "run_budget_s": run_budget_s, "planned_steps": n, "step_ms": step_seconds(cost) * 1e3}
    rundir.atomic_write_json(path, plan)
    return plan


def seed_config(base: TrainConfig, plan: dict[str, Any], seed: int, user_warmup: bool) -> TrainConfig:
    """The seed's settings: exactly the planned steps, warmup at most a tenth of them unless
    the user set it (a task's warmup suits its own, longer, default run). A budget also
    caps the time at 1.5x the planned time (plus MAX_TIME_SLACK_S), so a slow moment cuts a run short (and the
    verdict flags it) rather than stalls the comparison."""
    n = plan["planned_steps"]
    update: dict[str, Any] = {"seed": seed, "steps": n, "eval_every": max(1, min(base.eval_every, n))}
    if not user_warmup:
        update["warmup_steps"] = min(base.warmup_steps, n // 10)
    budget_s = plan.get("run_budget_s", plan["budget_s"])
    if budget_s is not None:
        update["max_time"] = 1.5 * max(budget_s, n * plan["step_ms"] / 1e3) + MAX_TIME_SLACK_S
        if plan["steps"] is None:
            update["eval_every"] = max(10, n // 5)
    return base.model_copy(update=update)


# ---------------------------------------------------------------- scoring per example

@torch.no_grad()
def score(model: torch.nn.Module, task: Task, split: str, metric: str, batch_size: int, device: torch.device,
          precision: str) -> tuple[dict[str, float], np.ndarray | None]:
    """(the task's metrics with 'loss', per-unit outcomes of `metric` or None): the same
    pass over the split as training's evaluation, keeping what the strategy scores per
    unit. Outcomes whose mean is not the metric (a task scoring its own way) are dropped."""
    output, target, loss = predict_split(model.to(device), task, split, batch_size, device, precision)
    metrics = task.metrics(output, target)
    metrics.setdefault("loss", loss)
    units = task.strategy.per_example(output, target, metric)
    if units is None or metric not in metrics or not math.isclose(float(units.mean()), metrics[metric], rel_tol=1e-5, abs_tol=1e-9):
        return metrics, None
    return metrics, units.double().numpy()


def seed_outcomes(run_dir: Path, task: Task, metric: str, batch_size: int, device: torch.device,
                  precision: str) -> np.ndarray | None:
    """A finished seed's per-unit test outcomes: read back, or scored once from its saved
    weights (the final, or best, model the summary reports) and saved beside them."""
    path = run_dir / OUTCOMES
    if path.exists():
        found = rundir.read_tensors(path)
        return found[metric].numpy() if metric in found else None
    model, _ = catalog.load_run(run_dir)
    _, units = score(model, task, "test", metric, batch_size, device, precision)
    if units is not None:
        holder = torch.nn.Module()  # rundir writes safetensors from a module's state
        holder.register_buffer(metric, torch.from_numpy(units))
        rundir.save_weights(holder, path)
    return units


# ---------------------------------------------------------------- training the seeds

def seed_dir(out: Path, model: str, k: int) -> Path:
    """The run directory of seed index k of the model named `model`."""
    return out / rundir.slug(model) / f"seed-{k}"


def _check_same_run(run: RunConfig, run_dir: Path, task: Task) -> None:
    """A finished seed is read back only for the same config (model, task, training, seed):
    another --seed or --set in the same --out would otherwise be answered by old runs."""
    keep = lambda d: {**d, "train": {k: v for k, v in d["train"].items() if k not in ("progress", "device")}}  # noqa: E731
    now = resolved_config(run.model_copy(update={"train": with_task_defaults(run.train, task)}), model_for_task(run.model, task))
    if keep(rundir.read_config(run_dir)) != keep(rundir.jsonable(now)):
        raise ConfigError(f"{run_dir} holds a finished run of another config; compare with the same settings or choose another --out")


def run_seed(run: RunConfig, run_dir: Path, task: Task, label: str, console) -> dict[str, Any] | None:
    """A seed's summary, trained now (resumed from its checkpoint when a killed compare
    left one); None when it finished earlier (its summary is then read back)."""
    if (run_dir / "summary.json").exists():
        _check_same_run(run, run_dir, task)
        return None
    resume = rundir.has_checkpoint(run_dir)
    console.print(f"{label}: training {run.train.steps} steps" + (" (resuming)" if resume else ""))
    return Trainer(run, run_dir, resume=resume, task=task).fit()


def baseline_rows(task: Task, metric: str, higher: bool, batch_size: int, device: torch.device
                  ) -> list[tuple[dict[str, Any], np.ndarray | None]]:
    """The problem's trivial baselines, fitted on the train split and scored on val and
    test as a model is: (row, per-unit test outcomes) each; rows carry no cost."""
    splits = task.splits()
    found = []
    for name, model in task.strategy.trivial_baselines(splits["train"], splits["test"]).items():
        test, units = score(model, task, "test", metric, batch_size, device, "fp32")
        val, _ = score(model, task, "val", metric, batch_size, device, "fp32")
        found.append((baseline_row(name, metric, higher, val, test, len(splits["test"])), units))
    return found


def planned_seconds(plan: dict[str, Any]) -> float:
    return plan["planned_steps"] * plan["step_ms"] / 1e3


def _plan_line(specs: list[ModelSpec], plans: list[dict[str, Any]], seeds: int, remaining: list[int], note: str) -> str:
    steps = sorted({p["planned_steps"] for p in plans})
    per = f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
    budget_s = plans[0].get("run_budget_s", plans[0]["budget_s"])
    how = f"budget {budget_s:.4g} s ({per} steps)" if budget_s is not None else f"{per} steps"
    left = sum(n * planned_seconds(p) for n, p in zip(remaining, plans))
    done = len(specs) * seeds - sum(remaining)
    return (f"plan: {len(specs)} models x {seeds} seed{'s' if seeds != 1 else ''} x {how}; about {left:.1f} s"
            + (f" ({format_duration(left)})" if left >= 90 else "") + " of training left (from measured step times)"
            + (f", {done} runs finished earlier" if done else "") + (f"; {note}" if note else ""))


@dataclass
class Job:
    """One comparison's settings, shared by its steps."""

    task: Task
    task_spec: ComponentSpec
    out: Path
    seeds: int
    train: TrainConfig  # before the per-model plan and per-seed seed
    user_warmup: bool  # the user set train.warmup_steps: keep it whatever the plan
    device: torch.device
    reference: str  # the first model: every row's delta is against it
    constraints: Constraints | None
    optimize: str
    clock: JobClock
    baselines: list[tuple[dict[str, Any], np.ndarray | None]] = field(default_factory=list)


def train_seeds(job: Job, spec: ModelSpec, model: dict[str, Any], plan: dict[str, Any], console
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Evidence]:
    """Every seed of one model: (summaries, seed records, evidence for the verdict). After
    each, a line with its quality and the job's progress with the time left."""
    summaries, records, outcomes = [], [], []
    for k in range(job.seeds):
        seed, start = job.train.seed + k, time.perf_counter()
        run_dir = seed_dir(job.out, spec.name, k)
        run = RunConfig(model=model, task=job.task_spec, train=seed_config(job.train, plan, seed, job.user_warmup))
        label = f"[{job.clock.done + 1}/{job.clock.runs}] {spec.name} seed {seed}"
        summary = run_seed(run, run_dir, job.task, label, console)
        trained, summary = summary is not None, summary or rundir.read_json(run_dir / "summary.json")
        summaries.append(summary)
        records.append(seed_record(seed, summary, plan))
        outcomes.append(seed_outcomes(run_dir, job.task, summary["metric"], job.train.eval_batch_size, job.device,
                                      summary.get("precision") or "fp32"))
        state = job.clock.finish(planned_seconds(plan), time.perf_counter() - start if trained else None)
        test = summary["final"].get("test", {}).get(summary["metric"], math.nan)
        done = f"{summary['metric']} {test:.4f} in {summary['train_seconds']:.0f} s" if trained else "finished earlier, read back"
        console.print(f"{label}: {done}; {state}", soft_wrap=True, highlight=False)
    stacked = np.stack(outcomes) if all(o is not None for o in outcomes) else None
    return summaries, records, Evidence([r["quality"] for r in records], stacked)


def compare(task_spec: ComponentSpec, models: list[str] | None = None, *, seeds: int = 1, budget_s: float | None = None,
            total_budget_s: float | None = None, steps: int | None = None, out: str | Path = "runs/compare", train_overrides: dict[str, Any] | None = None,
            model_overrides: dict[str, Any] | None = None, device: str = "auto", seed: int = 0,
            constraints: Constraints | None = None, optimize: str = "quality", console=None) -> dict[str, Any]:
    """Train every model `seeds` times (seed, seed + 1, ...: weights, data order, dropout),
    evaluate and profile it, add the trivial baselines and judge; returns results.json's
    content (also written to `out` with results.csv and report.html). `model_overrides`
    (e.g. dim, depth) apply to every model, so they compare at one size. Each model-seed
    trains `budget_s`, or an equal share of `total_budget_s`, or `steps`; with none, the
    task's default steps, capped by budget.DEFAULT_TOTAL_S for the whole job."""
    started = time.perf_counter()
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if optimize not in OPTIMIZE:  # before any training, not after it
        raise unknown("--optimize value", optimize, OPTIMIZE)
    console = console or Console(stderr=True)
    task: Task = registry.build("task", task_spec.name, **task_spec.options)
    task.splits()
    specs = [parse_model_spec(m) for m in models] if models else default_models(task, model_overrides)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"--models names a model twice: {', '.join(names)}")
    base = with_task_defaults(TrainConfig.model_validate({"seed": seed, "device": device, **(train_overrides or {})}), task)
    job = Job(task, task_spec, Path(out), seeds, base, "warmup_steps" in (train_overrides or {}), resolve_device(device),
              specs[0].name, constraints, optimize, JobClock(len(specs) * seeds, 0.0))
    model_dicts = [model_dict(s, model_overrides) for s in specs]
    dirs = [job.out / rundir.slug(s.name) for s in specs]
    costs = []
    for model_dir, model in zip(dirs, model_dicts):  # every cost first: the plan estimates the whole job
        model_dir.mkdir(parents=True, exist_ok=True)
        costs.append(measured_cost(model_dir, model_for_task(model, task), task, base, job.device, base.seed))
    estimate = seeds * sum(base.steps * step_seconds(c) for c in costs)
    share, total = run_budget(len(specs) * seeds, estimate, time.perf_counter() - started, budget_s, total_budget_s, steps)
    plans = [planned(d, c, base, budget_s, steps, total_budget_s, share if total else None) for d, c in zip(dirs, costs)]
    job.clock.planned_s = seeds * sum(planned_seconds(p) for p in plans)
    remaining = [sum(not (seed_dir(job.out, s.name, k) / "summary.json").exists() for k in range(seeds)) for s in specs]
    note = budget_note(plans[0].get("run_budget_s"), total, total_budget_s is not None)
    console.print(_plan_line(specs, plans, seeds, remaining, note), soft_wrap=True, highlight=False)
    metric = base.metric or task.primary_metric
    job.baselines = baseline_rows(task, metric, task.strategy.higher_is_better(metric), base.eval_batch_size, job.device)
    rows, evidence = [], {}
    for spec, model, cost, plan in zip(specs, model_dicts, costs, plans):
        summaries, records, evidence[spec.name] = train_seeds(job, spec, model, plan, console)
        rows.append(model_row(spec.name, summaries, records, cost, len(task.splits()["test"])))
        results = write_results(rows, evidence, job)
    return results


def write_results(rows: list[dict[str, Any]], evidence: dict[str, Evidence], job: Job) -> dict[str, Any]:
    """The models so far beside the baselines, judged, as results.json / results.csv /
    report.html; returns the results. Written after every model, so a long compare shows
    its progress and a killed one leaves the models finished so far."""
    first = rows[0]
    rows = [dict(r, flags=[]) for r in rows]  # fresh verdict fields on every write
    evidence = dict(evidence)
    for row, units in job.baselines:
        rows.append(dict(row, flags=[]))
        evidence[row["model"]] = Evidence([row["quality"]], None if units is None else units[None])
    ranked, verdict = judge(rows, evidence, reference=job.reference, constraints=job.constraints, optimize=job.optimize)
    results = {"task": job.task.name, "metric": first["metric"], "higher_is_better": first["higher_is_better"],
               "n_test": len(job.task.splits()["test"]), "seeds": job.seeds, "reference": job.reference,
               **verdict, "rows": ranked}
    rundir.atomic_write_json(job.out / "results.json", results)
    write_csv(job.out / "results.csv", ranked)
    curves = {r["model"]: [rundir.read_metrics(seed_dir(job.out, r["model"], k)) for k in range(len(r["seeds"]))]
              for r in ranked if not r["baseline"]}
    write_report(job.out, results, curves)
    return results
