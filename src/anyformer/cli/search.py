"""`anyformer search`: the Pareto front of a design space (anyformer.search)."""
from __future__ import annotations

from typing import Any, Optional

import typer
from rich.table import Table

from anyformer.budget import parse_duration
from anyformer.cli.app import app, console, err_console
from anyformer.config import parse_assignments
from anyformer.search import search

SPACE_HELP = ("YAML space: fixed values and distributions ({choice: [..]}, {int: [lo, hi]}, {float: [lo, hi], log: true}) "
              "under model:, train:, quantization:; a component may choose among components with their options "
              "({choice: {softmax: {}, local: {window: {choice: [4, 8]}}}}), mixer/ffn per layer group (groups: 2)")


def front_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"Pareto front: {summary['task']} ({', '.join(summary['directions_text'])})")
    for head in ("trial", f"{summary['metric']} (val)", "test", "latency ms", "params", "size MiB", "design", "config"):
        table.add_column(head, overflow="fold")
    for r in summary["front"]:
        table.add_row(str(r["number"]), f"{r['quality']:.4f}", f"{r['test']:.4f}" if r["test"] is not None else "",
                      f"{r['latency_ms']:.3f}", f"{r['params']:,.0f}", f"{r['size_mb']:.3f}", r["design"], r["config"])
    return table


@app.command("search")
def search_cmd(
    task: Optional[str] = typer.Option(None, "--task", help="task name, e.g. digits (see `anyformer list task`)"),
    space: Optional[str] = typer.Option(None, "--space", help=SPACE_HELP),
    objectives: str = typer.Option("quality,latency", "--objectives", help="comma-separated: quality, latency, params, memory, size"),
    trials: Optional[int] = typer.Option(None, "--trials", help="trials to finish (complete or pruned); default 30"),
    budget: Optional[str] = typer.Option(None, "--budget", help="training time per trial, e.g. 15s (default 15 s); steps follow from the measured step time"),
    steps: Optional[int] = typer.Option(None, "--steps", help="optimizer steps per trial (instead of a time budget)"),
    out: str = typer.Option("runs/search", "--out", help="search folder: settings, journal, trials, front, configs, figures, search.html"),
    storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL shared by workers on many machines, e.g. "
                                          "postgresql://user@host/db (default: a journal file in --out)"),
    study: str = typer.Option("search", "--study", help="study name in the storage"),
    workers: int = typer.Option(1, "--workers", help="worker processes on this machine sharing the storage, each with its share of the cores"),
    sampler: str = typer.Option("nsga2", "--sampler", help="nsga2 (TPE for one objective), tpe, random"),
    population: Optional[int] = typer.Option(None, "--population", help="NSGA-II generation size (default trials/4, 4..50)"),
    timing: Optional[str] = typer.Option(None, "--timing", help="eager or compiled latency (default: compiled when the space quantizes)"),
    no_prune: bool = typer.Option(False, "--no-prune", help="train every trial to the end"),
    set_: list[str] = typer.Option([], "--set", help="train.* fields every trial shares, e.g. train.eval_every=20"),
    heartbeat: int = typer.Option(10, "--heartbeat", min=1, help="RDB storage: seconds between a running trial's heartbeats"),
    grace: int = typer.Option(30, "--grace", min=1, help="RDB storage: seconds without a heartbeat before a trial counts as its worker's death (failed, retried)"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
    resume: bool = typer.Option(False, "--resume", help="continue the search in --out with its saved settings (a rerun of the same command continues too)"),
) -> None:
    """Multi-objective search of the design space on Optuna: the Pareto front of quality against cost."""
    train = {k.removeprefix("train."): v for k, v in parse_assignments(set_).items()}
    summary = search(task, space, objectives=objectives, trials=trials, budget_s=parse_duration(budget), steps=steps, out=out,
                     storage=storage, study=study, workers=workers, seed=seed, sampler=sampler, population=population,
                     device=device, timing=timing, train_overrides=train, prune=not no_prune, resume=resume, heartbeat_s=heartbeat,
                     grace_s=grace, console=err_console)
    console.print(front_table(summary))
    console.print(f"hypervolume {summary['hypervolume']:.4f}; results: {out}/front.csv, {out}/trials.csv, {out}/configs/, "
                  f"{out}/search.html", highlight=False, soft_wrap=True)
