"""The `anyformer` command. Errors print one line and exit 2; `--debug` shows the traceback."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Optional

import torch
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from anyformer import catalog, registry, rundir
from anyformer.bench import plot_sweeps, profile, save_json, sweep
from anyformer.bench.inputs import example_model, length_builder
from anyformer.budget import parse_duration
from anyformer.compare import compare
from anyformer.config import model_config, parse_assignments
from anyformer.errors import AnyformerError, ConfigError, TrainingError, unknown
from anyformer.interop.hf.convert import export_hf, export_notes, import_hf
from anyformer.presets import list_presets, load_preset
from anyformer.report.html import FIGURE_FILES, write_report
from anyformer.report.sources import read_compare_dirs
from anyformer.runtime import resolve_device
from anyformer.tasks import describe as task_describe
from anyformer.train import train
from anyformer.train.config import run_config
from anyformer.train.evaluate import evaluate_run
from anyformer.verdict import OPTIMIZE, Constraints, results_table, write_csv

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Build, train, measure and compare Transformer variants.")
# Piped output (CI logs, files) gets a wide table rather than rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)
STATE = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show tracebacks on errors")) -> None:
    STATE["debug"] = debug


def _yes_no(v: object) -> str:
    return "-" if v is None else ("yes" if v else "no")


@app.command("list")
def list_cmd(kind: Optional[str] = typer.Argument(None, help="mixer, ffn, norm, position, encoder, head, task or preset")) -> None:
    """The catalogue: every registered component (and preset) with its cost and paper;
    `list task` shows each task's NAME:ARG form and required options."""
    kinds = list(registry.KINDS) + ["preset"]
    if kind is not None and kind not in kinds:
        raise unknown("kind", kind, kinds)
    if kind == "task":
        _list_tasks()
        return
    table = Table(title="anyformer components", show_lines=False)
    for col in ("name", "kind", "complexity", "causal", "mask", "paper"):
        table.add_column(col, overflow="fold")
    for k in (kinds if kind is None else [kind]):
        if k == "preset":
            for name in list_presets():
                p = load_preset(name)
                table.add_row(name, "preset", "", "", "", str(p.get("paper", "")))
            continue
        for name in registry.list_components(k):
            d = registry.describe(k, name)
            table.add_row(name, k, str(d["complexity"]), _yes_no(d["causal"]), _yes_no(d["mask"]), str(d["paper"]))
    console.print(table)


def _list_tasks() -> None:
    # A task's required options are what a user must supply, so they get their own column.
    table = Table(title="anyformer tasks (options: `anyformer show task NAME`)")
    for col in ("name", "on the command line", "required options", "problem", "inputs", "paper"):
        table.add_column(col, overflow="fold")
    for name in registry.list_components("task"):
        t = task_describe.task_summary(name)
        table.add_row(name, t["form"], ", ".join(t["required"]) or "-", t["problem"], t["modality"], t["paper"])
    console.print(table)


def _show_component(kind: str, name: Optional[str]) -> None:
    """`show KIND NAME`: each option of a registered component, from its option model."""
    if name is None:
        raise ConfigError(f"show {kind} needs a name: `anyformer show {kind} NAME`; {kind}s: {', '.join(registry.list_components(kind))}")
    options = registry.describe_options(kind, name)
    if kind == "task":
        t = task_describe.task_details(name)
        console.print(f"[bold]task {escape(name)}[/]: {escape(t['doc'])}", highlight=False)
        console.print(f"problem: {t['problem']}; inputs: {t['modality']}")
        arg = f"; {t['argument']}" if t["argument"] else ""
        console.print(escape(f"command line: compare --task {t['form']}, train --set task={t['form']}{arg}"), highlight=False)
        example = next((f" (e.g. --set task.{o['name']}={task_describe.format_default(o)})" for o in options if not o["required"] and o["default"] is not None), "")
        console.print(escape(f"other options: --set task.OPTION=VALUE, one --set per option{example}"), highlight=False)
    table = Table(title=f"{kind} {name}: options")
    for col in ("option", "type", "default", "required", "description"):
        table.add_column(col, overflow="fold")
    for o in options:
        table.add_row(o["name"], escape(o["type"]), escape(task_describe.format_default(o)), _yes_no(o["required"]), escape(o["description"]))
    console.print(table)
    required = [o["name"] for o in options if o["required"]]
    console.print(f"required: {', '.join(required) if required else 'none'}")


@app.command("show")
def show_cmd(
    source: str = typer.Argument(..., help="preset name or YAML path; or a kind (task, mixer, ...) and then NAME"),
    name: Optional[str] = typer.Argument(None, help="with a kind: the component, e.g. `show task text-csv`"),
    set_: list[str] = typer.Option([], "--set", help="override, key=value, one --set per assignment (--set mixer=linear --set mixer.window=8)"),
) -> None:
    """Print the resolved config and the parameter count of each part; `show task NAME` (any
    kind) prints the component's options: type, default, required, description."""
    if source in registry.KINDS:
        if set_:
            raise ConfigError(f"--set applies to a preset or YAML, not to `show {source}`")
        _show_component(source, name)
        return
    if name is not None and "=" in name:
        # `--set a=1 b=2` leaves b=2 as a stray argument: say the form that works.
        raise ConfigError(f"stray argument {name!r}: --set takes one key=value, so repeat it (--set {(set_ or ['k=v'])[-1]} --set {name})")
    if name is not None:
        raise ConfigError(f"show {source!r} takes no second argument {name!r}; `show KIND NAME` needs a kind: {', '.join(registry.KINDS)}")
    cfg = model_config(source, **parse_assignments(set_))
    console.print(yaml.safe_dump({"model": cfg.to_dict()}, sort_keys=False).rstrip())
    model = catalog.create(cfg)
    table = Table(title=f"parameters: {source}")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for part, n in model.parameter_report().items():
        table.add_row(part, f"{n:,}")
    console.print(table)


def _run_config(config: Optional[str], set_: list[str], **flags):
    if config is not None and "=" in config and not Path(config).exists():
        # `train --set a=1 b=2` leaves b=2 in the CONFIG slot: say the form that works.
        raise ConfigError(f"stray argument {config!r}: --set takes one key=value, so repeat it (--set {(set_ or ['k=v'])[-1]} --set {config})")
    overrides = parse_assignments(set_)
    for key, value in flags.items():
        if value is not None:
            overrides[f"train.{key}"] = value
    return run_config(config, overrides)


@app.command("train")
def train_cmd(
    config: Optional[str] = typer.Argument(None, help="run YAML (model, task, train); omitted: vit on digits"),
    set_: list[str] = typer.Option([], "--set", help="override, key=value, one --set per assignment: --set task=text-csv:data.csv --set train.lr=3e-4 --set mixer=linear"),
    out: Optional[str] = typer.Option(None, "--out", help="run directory (default runs/<preset>-<task>)"),
    resume: bool = typer.Option(False, "--resume", help="continue the checkpoint in --out exactly"),
    steps: Optional[int] = typer.Option(None, "--steps", help="optimizer steps"),
    budget: Optional[str] = typer.Option(None, "--budget", help="stop training after this long: seconds or 90s, 10m, 1h"),
    max_time: Optional[str] = typer.Option(None, "--max-time", hidden=True, help="old name of --budget"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    skip_nonfinite: Optional[int] = typer.Option(None, "--skip-nonfinite", help="skip up to N batches with a non-finite loss"),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model"),
) -> None:
    """Train a model on a task; writes a run directory (config, metrics, weights, state)."""
    run = _run_config(config, set_, steps=steps, max_time=parse_duration(budget or max_time), device=device, seed=seed,
                      skip_nonfinite=skip_nonfinite, compile=compile_)
    out = out or f"runs/{run.model.get('preset', 'model')}-{run.task.name}"
    summary = train(run, out, resume=resume)
    _print_summary(summary, out)


def _print_summary(summary: dict, out: str) -> None:
    table = Table(title=f"{summary['task']}: {summary['steps']} steps ({summary['stopped']}), {summary['train_seconds']:.0f} s")
    metrics = sorted({k for m in summary["final"].values() for k in m})
    table.add_column("split")
    for k in metrics:
        table.add_column(k, justify="right")
    for split, vals in summary["final"].items():
        table.add_row(split, *(f"{vals[k]:.4f}" if k in vals else "" for k in metrics))
    console.print(table)
    console.print(f"run directory: {out}")


@app.command("eval")
def eval_cmd(
    run_dir: str = typer.Argument(..., help="a run directory written by `anyformer train` or `import-hf`"),
    split: list[str] = typer.Option(["test"], "--split", help="split(s) to evaluate"),
    device: str = typer.Option("auto", "--device"),
    task: Optional[str] = typer.Option(None, "--task", help="evaluate on this task instead of the run's (an imported run has none)"),
) -> None:
    """Evaluate a trained run on its task's splits (or on --task)."""
    name, results = evaluate_run(run_dir, split, device, task)
    _print_summary({"task": name, "steps": "-", "stopped": "eval", "train_seconds": 0.0, "final": results}, run_dir)


@app.command("import-hf")
def import_hf_cmd(
    source: str = typer.Argument(..., help="a local Hugging Face checkpoint folder (config.json + model.safetensors)"),
    out: str = typer.Option(..., "--out", help="the run directory to write"),
) -> None:
    """Import a Hugging Face checkpoint (BERT/MiniLM, ViT, GPT-2, Llama) as a run directory."""
    run_dir, config = import_hf(source, out)
    left = ", ".join(config["imported"]["not_imported"])
    console.print(f"imported {config['imported']['model_type']} into {run_dir}" + (f" (not imported: {left})" if left else ""), highlight=False, soft_wrap=True)


@app.command("export")
def export_cmd(
    run_dir: str = typer.Argument(..., help="a run directory (trained or imported)"),
    format_: str = typer.Option(..., "--format", help="hf (a transformers checkpoint folder) or onnx"),
    out: str = typer.Option(..., "--out", help="the folder (hf) or .onnx file (onnx) to write"),
) -> None:
    """Export a run as a transformers checkpoint (AutoModel.from_pretrained loads it) or an ONNX graph."""
    if format_ not in ("hf", "onnx"):
        raise unknown("export format", format_, ("hf", "onnx"))
    if format_ == "onnx":  # imported by name: torch.onnx and onnxscript load only for this branch
        path, notes = importlib.import_module("anyformer.interop.onnx").export_onnx(Path(run_dir), Path(out)), []
    else:
        path, notes = export_hf(run_dir, out), export_notes(run_dir)
    console.print(f"wrote {path}" + "".join(f"; note: {n}" for n in notes), highlight=False, soft_wrap=True)


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
    dirs: list[str] = typer.Argument(..., help="finished compare directories (several are merged: same task)"),
    out: Optional[str] = typer.Option(None, "--out", help="output folder (default: the directory itself when one is given, runs/report-<task> when several)"),
) -> None:
    """Rebuild the HTML report (and its figure files) from finished compare directories."""
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning anyformer errors into one line and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, standalone_mode=False)
    except AnyformerError as err:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise SystemExit(130) from None
    except (typer.Exit, SystemExit) as done:
        code = getattr(done, "exit_code", getattr(done, "code", 0))
        raise SystemExit(code) from None
    except typer.Abort:
        raise SystemExit(1) from None
    except Exception as err:
        if not callable(getattr(err, "format_message", None)):  # not a parser error: a bug
            if debug:
                raise
            err_console.print(f"[bold red]internal error:[/] {type(err).__name__}: {escape(str(err).splitlines()[0]) if str(err) else ''} "
                              "(a bug in anyformer: rerun with --debug for the traceback)", highlight=False, soft_wrap=True)
            raise SystemExit(1) from None
        # A parser error (missing value, bad number, unknown option; click's, vendored or not,
        # carries format_message) gets the same one line as every other error, not a usage block.
        ctx = getattr(err, "ctx", None)
        where = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
        message = " ".join(err.format_message().split()).rstrip(".")
        err_console.print(f"[bold red]error:[/] {escape(message)}{where}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
