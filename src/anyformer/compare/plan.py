"""Each model's cost (measured once, re-measured when its latency repeats disagree) and
plan (the step count every seed trains, from the measured step time and the budget)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from anyformer import catalog, rundir
from anyformer.bench import profile
from anyformer.budget import format_duration
from anyformer.compare.models import ModelSpec
from anyformer.errors import ConfigError
from anyformer.tasks.base import Task
from anyformer.train.config import TrainConfig
from anyformer.verdict import LATENCY_SPREAD

# Measured step time x this = the planned time per step (evaluation, logging, data).
STEP_OVERHEAD = 1.25
# A budgeted seed stops at 1.5x its planned time plus this: a run's fixed costs (first step, evaluation).
MAX_TIME_SLACK_S = 5.0


def _cost(model, task: Task, batch: int, device: torch.device, precision: str) -> dict[str, Any]:
    """The model's cost on a batch of test data, in the precision it is trained in: 20 repeats,
    so the quartiles the latency flag reads are steady (a small model's forward takes ms)."""
    test = task.splits()["test"]
    b = test.batch(torch.arange(min(batch, len(test))))
    return profile(model, b.inputs, mask=b.mask, device=device, precision=precision, repeats=20, warmup=3, budget_s=20.0)


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
    """The planned seconds per training step: the fastest measured step (the machine's speed;
    a busy moment during the short measurement inflates the median and would cut every
    seed's steps), times STEP_OVERHEAD. The time cap guards the other way."""
    step = cost["forward_backward"]
    return step.get("min_ms", step["median_ms"]) / 1e3 * STEP_OVERHEAD


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


def seed_config(base: TrainConfig, plan: dict[str, Any], seed: int, user_warmup: bool, sharing: int = 1) -> TrainConfig:
    """The seed's settings: exactly the planned steps, warmup at most a tenth of them unless
    the user set it (a task's warmup suits its own, longer, default run). A budget also
    caps the time at 1.5x the planned time (plus MAX_TIME_SLACK_S), so a slow moment cuts a
    run short (and the verdict flags it) rather than stalls the comparison; `sharing` runs
    side by side on the machine's cores multiply the cap (each may run that much slower)."""
    n = plan["planned_steps"]
    update: dict[str, Any] = {"seed": seed, "steps": n, "eval_every": max(1, min(base.eval_every, n))}
    if not user_warmup:
        update["warmup_steps"] = min(base.warmup_steps, n // 10)
    budget_s = plan.get("run_budget_s", plan["budget_s"])
    if budget_s is not None:
        update["max_time"] = 1.5 * sharing * max(budget_s, n * plan["step_ms"] / 1e3) + MAX_TIME_SLACK_S
        if plan["steps"] is None:
            update["eval_every"] = max(10, n // 5)
    return base.model_copy(update=update)


def planned_seconds(plan: dict[str, Any]) -> float:
    return plan["planned_steps"] * plan["step_ms"] / 1e3


def plan_line(specs: list[ModelSpec], plans: list[dict[str, Any]], seeds: int, remaining: list[int], note: str) -> str:
    steps = sorted({p["planned_steps"] for p in plans})
    per = f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
    budget_s = plans[0].get("run_budget_s", plans[0]["budget_s"])
    how = f"budget {budget_s:.4g} s ({per} steps)" if budget_s is not None else f"{per} steps"
    left = sum(n * planned_seconds(p) for n, p in zip(remaining, plans))
    done = len(specs) * seeds - sum(remaining)
    return (f"plan: {len(specs)} models x {seeds} seed{'s' if seeds != 1 else ''} x {how}; about {left:.1f} s"
            + (f" ({format_duration(left)})" if left >= 90 else "") + " of training left (from measured step times)"
            + (f", {done} runs finished earlier" if done else "") + (f"; {note}" if note else ""))
