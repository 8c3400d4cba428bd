"""The job: every model's cost and plan first (the plan line estimates the whole job), then
each model's seeds, one after another or side by side, then the verdict, written after
every model as results.json, results.csv and report.html."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from anyformer import registry, rundir
from anyformer.budget import JobClock, budget_note, run_budget
from anyformer.compare.models import ModelSpec, default_models, model_dict, parse_model_spec
from anyformer.compare.plan import measured_cost, plan_line, planned, planned_seconds, seed_config, step_seconds
from anyformer.compare.scoring import baseline_rows, seed_outcomes
from anyformer.config import ComponentSpec
from anyformer.errors import ConfigError, unknown
from anyformer.report.html import write_report
from anyformer.runtime import environment, resolve_device
from anyformer.tasks.base import Task
from anyformer.tasks.resolve import model_for_task
from anyformer.train.config import RunConfig, TrainConfig, same_run
from anyformer.train.loop import Trainer, resolved_config, with_task_defaults
from anyformer.train.side_by_side import SideBySide, workers_for
from anyformer.verdict import OPTIMIZE, Constraints, Evidence, judge, model_row, seed_record, write_csv


def seed_dir(out: Path, model: str, k: int) -> Path:
    """The run directory of seed index k of the model named `model`."""
    return out / rundir.slug(model) / f"seed-{k}"


def _check_same_run(run: RunConfig, run_dir: Path, task: Task) -> None:
    """A finished seed is read back only for the same config (model, task, training, seed):
    another --seed or --set in the same --out would otherwise be answered by old runs."""
    now = resolved_config(run.model_copy(update={"train": with_task_defaults(run.train, task)}), model_for_task(run.model, task))
    if not same_run(rundir.read_config(run_dir), rundir.jsonable(now)):
        raise ConfigError(f"{run_dir} holds a finished run of another config; compare with the same settings or choose another --out")


def train_here(run: RunConfig, run_dir: Path, task: Task, label: str, console) -> dict[str, Any]:
    """A seed trained in this process (resumed from its checkpoint when a killed compare left one)."""
    resume = rundir.has_checkpoint(run_dir)
    console.print(f"{label}: training {run.train.steps} steps" + (" (resuming)" if resume else ""))
    return Trainer(run, run_dir, resume=resume, task=task).fit()


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
    environment: dict[str, Any] = field(default_factory=dict)  # what the costs were measured on
    pool: SideBySide | None = None  # seeds train side by side in it; None: one after another


def train_seeds(job: Job, spec: ModelSpec, model: dict[str, Any], plan: dict[str, Any], console
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Evidence]:
    """Every seed of one model: (summaries, seed records, evidence for the verdict). The
    seeds not finished earlier train side by side when the job has a pool, else in turn;
    after each, a line with its quality and the job's progress with the time left."""
    dirs = [seed_dir(job.out, spec.name, k) for k in range(job.seeds)]
    pending = [k for k, d in enumerate(dirs) if not (d / "summary.json").exists()]
    side = job.pool is not None and len(pending) > 1
    # Side by side each seed gets a share of the cores: its time cap grows with the sharing.
    sharing = min(job.pool.workers, len(pending)) if side else 1
    runs = [RunConfig(model=model, task=job.task_spec, train=seed_config(job.train, plan, job.train.seed + k,
                                                                          job.user_warmup, sharing)) for k in range(job.seeds)]
    for k in set(range(job.seeds)) - set(pending):
        _check_same_run(runs[k], dirs[k], job.task)
    start = time.perf_counter()
    if side:
        futures = {k: job.pool.submit(runs[k], dirs[k], rundir.has_checkpoint(dirs[k])) for k in pending}
        console.print(f"[{job.clock.done + 1}-{job.clock.done + job.seeds}/{job.clock.runs}] {spec.name}: {len(pending)} "
                      f"seeds side by side ({job.pool.workers} processes x {job.pool.threads} thread"
                      f"{'s' if job.pool.threads > 1 else ''}), {plan['planned_steps']} steps each", highlight=False)
    summaries, records, outcomes = [], [], []
    for k, (run, run_dir) in enumerate(zip(runs, dirs)):
        seed = run.train.seed
        label = f"[{job.clock.done + 1}/{job.clock.runs}] {spec.name} seed {seed}"
        if k not in pending:
            summary = rundir.read_json(run_dir / "summary.json")
        else:
            summary = futures[k].result() if side else train_here(run, run_dir, job.task, label, console)
        summaries.append(summary)
        records.append(seed_record(seed, summary, plan))
        outcomes.append(seed_outcomes(run_dir, job.task, summary["metric"], job.train.eval_batch_size, job.device,
                                      summary.get("precision") or "fp32"))
        # Seeds trained together share the group's wall time (for the job's pace and ETA).
        spent = (time.perf_counter() - start) / (len(pending) if side else 1)
        state = job.clock.finish(planned_seconds(plan), spent if k in pending else None)
        if not side:
            start = time.perf_counter()
        test = summary["final"].get("test", {}).get(summary["metric"], math.nan)
        done = (f"{summary['metric']} {test:.4f} in {summary['train_seconds']:.0f} s" if k in pending
                else "finished earlier, read back")
        console.print(f"{label}: {done}; {state}", soft_wrap=True, highlight=False)
    stacked = np.stack(outcomes) if all(o is not None for o in outcomes) else None
    return summaries, records, Evidence([r["quality"] for r in records], stacked)


def compare(task_spec: ComponentSpec, models: list[str] | None = None, *, seeds: int = 1, budget_s: float | None = None,
            total_budget_s: float | None = None, steps: int | None = None, out: str | Path = "runs/compare", train_overrides: dict[str, Any] | None = None,
            model_overrides: dict[str, Any] | None = None, device: str = "auto", seed: int = 0,
            constraints: Constraints | None = None, optimize: str = "quality", seed_workers: int | None = None,
            console=None) -> dict[str, Any]:
    """Train every model `seeds` times (seed, seed + 1, ...: weights, data order, dropout),
    evaluate and profile it, add the trivial baselines and judge; returns results.json's
    content (also written to `out` with results.csv and report.html). `model_overrides`
    (e.g. dim, depth) apply to every model, so they compare at one size. Each model-seed
    trains `budget_s`, or an equal share of `total_budget_s`, or `steps`; with none, the
    task's default steps, capped by budget.DEFAULT_TOTAL_S for the whole job. `seed_workers`:
    processes that train a model's seeds side by side (None: one per seed up to the CPU's
    cores, on a CPU; 1: one after another in this process)."""
    started = time.perf_counter()
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if seed_workers is not None and seed_workers < 1:
        raise ConfigError(f"--seed-workers must be at least 1, got {seed_workers}")
    if optimize not in OPTIMIZE:  # before any training, not after it
        raise unknown("--optimize value", optimize, OPTIMIZE)
    console = console or Console(stderr=True)
    task: Task = registry.build("task", task_spec.name, **task_spec.options)
    task.splits()
    specs = [parse_model_spec(m) for m in models] if models else default_models(task, model_overrides)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"--models names a model twice: {', '.join(names)}")
    folders = [rundir.slug(n) for n in names]
    if len(set(folders)) != len(folders):
        twins = sorted({n for n, f in zip(names, folders) if folders.count(f) > 1})
        raise ConfigError(f"models {', '.join(twins)} would share one run folder in {out}; rename one of their files")
    base = with_task_defaults(TrainConfig.model_validate({"seed": seed, "device": device, **(train_overrides or {})}), task)
    job = Job(task, task_spec, Path(out), seeds, base, "warmup_steps" in (train_overrides or {}), resolve_device(device),
              specs[0].name, constraints, optimize, JobClock(len(specs) * seeds, 0.0))
    job.environment = environment(job.device)
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
    console.print(plan_line(specs, plans, seeds, remaining, note), soft_wrap=True, highlight=False)
    metric = base.metric or task.primary_metric
    job.baselines = baseline_rows(task, metric, task.strategy.higher_is_better(metric), base.eval_batch_size, job.device)
    rows, evidence = [], {}
    workers, threads = workers_for(seeds, job.device, seed_workers)
    job.pool = SideBySide(workers, threads) if workers > 1 else None
    try:
        for spec, model, cost, plan in zip(specs, model_dicts, costs, plans):
            summaries, records, evidence[spec.name] = train_seeds(job, spec, model, plan, console)
            rows.append(model_row(spec.name, summaries, records, cost, len(task.splits()["test"])))
            results = write_results(rows, evidence, job)
    finally:
        if job.pool is not None:
            job.pool.close()
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
    problem = job.task.strategy
    ranked, verdict = judge(rows, evidence, reference=job.reference, constraints=job.constraints, optimize=job.optimize,
                            bounds=problem.metric_range(first["metric"]))
    # Intervals and tests resample the units per_example scores: tokens for a language model.
    units = next((e.outcomes.shape[1] for e in evidence.values() if e.outcomes is not None), None)
    results = {"task": job.task.name, "metric": first["metric"], "higher_is_better": first["higher_is_better"],
               "n_test": len(job.task.splits()["test"]), "test_unit": problem.test_unit, "n_test_units": units,
               "seeds": job.seeds, "reference": job.reference, **verdict, "environment": job.environment, "rows": ranked}
    rundir.atomic_write_json(job.out / "results.json", results)
    write_csv(job.out / "results.csv", ranked)
    curves = {r["model"]: [rundir.read_metrics(seed_dir(job.out, r["model"], k)) for k in range(len(r["seeds"]))]
              for r in ranked if not r["baseline"]}
    write_report(job.out, results, curves)
    return results
