"""Commands that measure and compare models: bench, compare, report."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer
from rich.table import Table

from anyformer import rundir
from anyformer.bench import plot_sweeps, profile, save_json, sweep
from anyformer.bench.inputs import example_model, length_builder
from anyformer.budget import parse_duration
from anyformer.search.job import report as search_report
from anyformer.search.settings import SETTINGS
from anyformer.cli.app import app, console, err_console
from anyformer.compare import compare
from anyformer.config import parse_assignments
from anyformer.errors import AnyformerError, ConfigError, TrainingError, unknown
from anyformer.report.attention import is_run_dir, write_run_report
from anyformer.report.html import FIGURE_FILES, write_report
from anyformer.report.sources import read_compare_dirs
from anyformer.runtime import resolve_device
from anyformer.train.config import run_config
from anyformer.verdict import OPTIMIZE, Constraints, results_table, write_csv


# ---------------------------------------------------------------- bench
def _parse_lengths(text: Optional[str]) -> list[int] | None:
    if not text:
        return None
    try:
        lengths = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ConfigError(f"--lengths expects comma-separated integers like 256,1024,4096, got {text!r}") from None
    if not lengths or lengths[0] < 1:
        raise ConfigError(f"--lengths must be positive integers, got {text!r}")
    return lengths


def _ms(stats: dict | None) -> str:
    if not stats:
        return "-"
    return f"{stats['median_ms']:.1f} [{stats['min_ms']:.1f}-{stats['max_ms']:.1f}]"


@app.command("bench")
def bench_cmd(
    source: str = typer.Argument(..., help="preset name, YAML path or run directory"),
    lengths: Optional[str] = typer.Option(None, "--lengths", help="comma-separated sequence lengths to sweep, e.g. 256,1024,4096"),
    batch: int = typer.Option(1, "--batch", min=1, help="samples per step"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast where a probe finds it faster), fp32 or bf16"),
    compile_: bool = typer.Option(False, "--compile", help="time a torch.compile'd model (compile time reported apart)"),
    set_: list[str] = typer.Option([], "--set", help="override, key=value, one --set per assignment (--set mixer=linear --set depth=2)"),
    out: Optional[str] = typer.Option(None, "--out", help="output directory (default runs/bench-<name>)"),
    repeats: int = typer.Option(3, "--repeats", min=1, help="timed steps per measurement (median reported)"),
    warmup: int = typer.Option(1, "--warmup", min=0, help="untimed steps before timing"),
) -> None:
    """Cost of a model: params, FLOPs, latency, throughput, peak memory and MFU, over lengths."""
    overrides = parse_assignments(set_)
    dev = resolve_device(device)
    name = Path(source).stem if source.endswith((".yaml", ".yml")) or Path(source).is_dir() else source
    out_dir = Path(out) if out else Path("runs") / f"bench-{name}"
    length_list = _parse_lengths(lengths)
    if length_list is None:
        model, x = example_model(source, overrides, batch)
        row = profile(model, x, device=dev, precision=precision, repeats=repeats, warmup=warmup, compile=compile_)
        row["length"] = row["tokens_per_sample"]
        result = {"rows": [row], "failure": None, "stopped": None, "largest_ok": row["length"]}
    else:
        build = length_builder(source, overrides, length_list, batch)
        with console.status(f"benchmarking {name} on {dev}") as status:
            result = sweep(build, length_list, device=dev, precision=precision, repeats=repeats, warmup=warmup, compile=compile_,
                           on_result=lambda r: status.update(f"benchmarking {name} on {dev}: length {r['length']} done"))
    table = Table(title=f"bench {name} on {dev} (batch {batch}, {torch.get_num_threads()} threads)")
    for col in ("length", "params", "non-emb", "GFLOP/sample fwd", "GFLOP/sample train", "fwd ms [min-max]",
                "fwd+bwd ms [min-max]", "train tokens/s", "peak MiB fwd", "peak MiB train", "MFU train"):
        table.add_column(col, justify="right")
    if compile_:
        table.add_column("compile s", justify="right")
    for r in result["rows"]:
        fl, mem, fb = r.get("flops", {}), r.get("memory", {}), r.get("forward_backward", {})
        cells = [str(r["length"]), f"{r['params']['total']:,}", f"{r['params']['non_embedding']:,}",
                 f"{fl.get('forward_per_sample', 0) / 1e9:.3f}", f"{fl.get('train_step_per_sample', 0) / 1e9:.3f}",
                 _ms(r.get("forward")), _ms(fb), f"{fb.get('tokens_per_s', 0):,.0f}",
                 f"{mem.get('forward_peak_bytes', 0) / 2**20:.1f}", f"{mem.get('train_step_peak_bytes', 0) / 2**20:.1f}",
                 f"{100 * fb.get('mfu', 0):.1f}%"]
        if compile_:
            cells.append(f"{r.get('compile_s', 0):.1f}")
        table.add_row(*cells)
    console.print(table)
    rows = result["rows"]
    if rows:
        console.print(f"roof: {rows[0]['roof']} = {rows[0]['roof_flops_per_s'] / 1e9:.1f} GFLOP/s (MFU is against it)")
    failure = result["failure"]
    err = failure.pop("exception", None) if failure else None
    report = {"source": source, "overrides": overrides, "batch": batch, "device": str(dev), "compile": compile_,
              "torch": torch.__version__, **result}
    json_path = save_json(report, out_dir / "bench.json")
    png_path = plot_sweeps({name: result}, out_dir / "bench.png", title=f"{name} on {dev}") if rows else None
    console.print(f"wrote {json_path}" + (f" and {png_path}" if png_path else ""))
    if failure:
        fit = f"the largest length that fit was {result['largest_ok']}" if result["largest_ok"] else "no length fit"
        if failure["kind"] == "out_of_memory":
            raise TrainingError(f"out of memory at length {failure['length']} (batch {batch}); {fit}; lower --batch or --lengths")
        if err is None or isinstance(err, AnyformerError):
            raise err or TrainingError(failure["message"])
        raise err  # not an anyformer error: a bug, shown with its traceback


@app.command("compare")
def compare_cmd(
    task: str = typer.Option(..., "--task", help="task name, e.g. digits, forecast, modular (see `anyformer list task`)"),
    models: Optional[str] = typer.Option(None, "--models", help="comma-separated: preset, preset+mixer or YAML; default: baseline + every efficient mixer"),
    budget: Optional[str] = typer.Option(None, "--budget", help="training time per model and seed, seconds or 90s, 10m, 1h (steps fixed once per model from its measured step time)"),
    total_budget: Optional[str] = typer.Option(None, "--total-budget", help="training time for the whole job, e.g. 10m: split equally over models x seeds"),
    budget_s: Optional[str] = typer.Option(None, "--budget-s", hidden=True, help="old name of --budget"),
    steps: Optional[int] = typer.Option(None, "--steps", help="optimizer steps per model and seed (instead of a time budget)"),
    seeds: int = typer.Option(1, "--seeds", min=1, help="independent trainings per model (seed, seed+1, ...); quality is their mean with a 95% interval"),
    seed_workers: Optional[int] = typer.Option(None, "--seed-workers", min=1, help="processes training a model's seeds side by side (default: one per seed up to the CPU cores, on a CPU; 1: one after another)"),
    out: Optional[str] = typer.Option(None, "--out", help="output folder (default runs/compare-<task>)"),
    set_: list[str] = typer.Option([], "--set", help="task.*, train.* or model override for every model, e.g. task.horizon=192, train.lr=1e-3, dim=64"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
    seed: int = typer.Option(0, "--seed", help="the first seed"),
    max_latency_ms: Optional[float] = typer.Option(None, "--max-latency-ms", help="recommend only models at most this slow (ms per test batch)"),
    max_params: Optional[int] = typer.Option(None, "--max-params", help="recommend only models with at most this many parameters"),
    max_memory_mb: Optional[float] = typer.Option(None, "--max-memory-mb", help="recommend only models whose inference peak memory is at most this many MiB"),
    optimize: str = typer.Option("quality", "--optimize", help="quality, latency or params: among models tied with the best that meet the limits, the fastest (quality, latency) or smallest (params)"),
) -> None:
    """Train every model on the task under the same budget; print quality beside cost."""
    if optimize not in OPTIMIZE:
        raise unknown("--optimize value", optimize, OPTIMIZE)
    # The one resolution path: task options (task.path=...) are merged before the task is
    # checked, and the model overrides come back merged into an empty model dict.
    run = run_config({"task": task}, parse_assignments(set_))
    spec, train_over, model_over = run.task, run.train.model_dump(exclude_unset=True), run.model
    names = [m for m in (models or "").split(",") if m.strip()] or None
    out = out or f"runs/compare-{spec.name}"
    limits = Constraints(max_latency_ms=max_latency_ms, max_params=max_params, max_memory_mb=max_memory_mb)
    results = compare(spec, names, seeds=seeds, budget_s=parse_duration(budget or budget_s),
                      total_budget_s=parse_duration(total_budget, "--total-budget"), steps=steps, out=out, train_overrides=train_over,
                      model_overrides=model_over, device=device, seed=seed, constraints=limits, optimize=optimize,
                      seed_workers=seed_workers, console=err_console)
    console.print(results_table(results))
    none = "" if results["recommendation"] else "none: "
    console.print(f"recommendation: {none}{results['recommendation_reason']}", highlight=False, soft_wrap=True)
    console.print(f"results: {out}/results.json, {out}/results.csv, {out}/report.html")


@app.command("report")
def report_cmd(
    dirs: list[str] = typer.Argument(..., help="finished compare directories (several are merged: same task), or one training run directory (its attention dynamics)"),
    out: Optional[str] = typer.Option(None, "--out", help="output folder (default: the directory itself when one is given, runs/report-<task> when several)"),
) -> None:
    """Rebuild the HTML report (and its figure files) from finished compare directories, or a search directory."""
    if len(dirs) == 1 and (Path(dirs[0]) / SETTINGS).exists():
        summary = search_report(dirs[0])
        console.print(f"report: {Path(dirs[0]) / 'search.html'} ({summary['counts']['finished']} trials, "
                      f"{len(summary['front'])} on the front, hypervolume {summary['hypervolume']:.4f})", highlight=False, soft_wrap=True)
        return
    if len(dirs) == 1 and is_run_dir(dirs[0]):  # one training run: its attention dynamics
        path, written = write_run_report(dirs[0], out)
        console.print(f"report: {path}; figures beside it: {', '.join(written) or 'none'}", highlight=False, soft_wrap=True)
        return
    results, curves = read_compare_dirs(dirs)
    target = Path(out) if out else (Path(dirs[0]) if len(dirs) == 1 else Path("runs") / f"report-{rundir.slug(str(results['task']))}")
    path = write_report(target, results, curves)
    if len(dirs) > 1:  # the merged rows, machine-readable; not results.json: the folder is no compare directory
        rundir.atomic_write_json(target / "merged.json", results)
        write_csv(target / "merged.csv", results["rows"])
    models = sum(not r.get("baseline") for r in results["rows"])
    written = ", ".join(name for name in [*FIGURE_FILES.values(), "merged.json", "merged.csv"] if (target / name).exists())
    console.print(f"report: {path} ({models} models from {len(dirs)} comparison{'s' if len(dirs) > 1 else ''}); "
                  f"figures beside it: {written or 'none'}", highlight=False, soft_wrap=True)
