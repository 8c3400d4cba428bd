"""The `anyformer` command. Errors print one line and exit 2; `--debug` shows the traceback."""
from __future__ import annotations

import sys
from typing import Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

from anyformer.errors import AnyformerError

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
    """The catalogue: every registered component (and preset) with its cost and paper."""
    from anyformer import registry
    from anyformer.presets import list_presets, load_preset

    kinds = list(registry.KINDS) + ["preset"]
    if kind is not None and kind not in kinds:
        from anyformer.errors import unknown

        raise unknown("kind", kind, kinds)
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


@app.command("show")
def show_cmd(
    source: str = typer.Argument(..., help="preset name or YAML path"),
    set_: list[str] = typer.Option([], "--set", help="override, key=value (e.g. mixer=linear, mixer.window=8)"),
) -> None:
    """Print the resolved config and the parameter count of each part."""
    import anyformer as af
    from anyformer.config import model_config, parse_assignments

    cfg = model_config(source, **parse_assignments(set_))
    console.print(yaml.safe_dump({"model": cfg.to_dict()}, sort_keys=False).rstrip())
    model = af.create(cfg)
    table = Table(title=f"parameters: {source}")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for part, n in model.parameter_report().items():
        table.add_row(part, f"{n:,}")
    console.print(table)


def _run_config(config: Optional[str], set_: list[str], **flags):
    from anyformer.config import parse_assignments, run_config

    overrides = parse_assignments(set_)
    for key, value in flags.items():
        if value is not None:
            overrides[f"train.{key}"] = value
    return run_config(config, overrides)


@app.command("train")
def train_cmd(
    config: Optional[str] = typer.Argument(None, help="run YAML (model, task, train); omitted: vit on digits"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. train.lr=3e-4, task.p=113, mixer=linear"),
    out: Optional[str] = typer.Option(None, "--out", help="run directory (default runs/<preset>-<task>)"),
    resume: bool = typer.Option(False, "--resume", help="continue the checkpoint in --out exactly"),
    steps: Optional[int] = typer.Option(None, "--steps", help="optimizer steps"),
    max_time: Optional[float] = typer.Option(None, "--max-time", help="stop after this many seconds"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    skip_nonfinite: Optional[int] = typer.Option(None, "--skip-nonfinite", help="skip up to N batches with a non-finite loss"),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model"),
) -> None:
    """Train a model on a task; writes a run directory (config, metrics, weights, state)."""
    from anyformer.train import train

    run = _run_config(config, set_, steps=steps, max_time=max_time, device=device, seed=seed,
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
    run_dir: str = typer.Argument(..., help="a run directory written by `anyformer train`"),
    split: list[str] = typer.Option(["test"], "--split", help="split(s) to evaluate"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Evaluate a trained run on its task's splits."""
    from anyformer.config import run_config
    from anyformer.train.evaluate import evaluate
    from anyformer.train.loop import build_task, load_run, pick_device

    model, config = load_run(run_dir)
    run = run_config({"task": config["task"]})
    task = build_task(run)
    dev = pick_device(device)
    model.to(dev)
    valid = list(task.splits())
    results = {}
    for s in split:
        if s not in valid:
            from anyformer.errors import unknown

            raise unknown("split", s, valid)
        results[s] = evaluate(model, task, s, config["train"].get("eval_batch_size", 256), dev)
    _print_summary({"task": task.name, "steps": "-", "stopped": "eval", "train_seconds": 0.0, "final": results}, run_dir)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning anyformer errors into one line and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, standalone_mode=False)
    except AnyformerError as err:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise SystemExit(130) from None
    except (typer.Exit, SystemExit) as done:
        code = getattr(done, "exit_code", getattr(done, "code", 0))
        raise SystemExit(code) from None
    except Exception as err:  # click usage errors and the like
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            raise SystemExit(2) from None
        if isinstance(err, click.exceptions.Abort):
            raise SystemExit(1) from None
        raise


if __name__ == "__main__":
    main()
