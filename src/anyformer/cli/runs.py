"""Commands on one run: train, eval, predict, import-hf, export, generate."""
from __future__ import annotations

import csv
import importlib
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from anyformer.budget import parse_duration
from anyformer.cli.app import app, console, err_console
from anyformer.config import parse_assignments
from anyformer.errors import ConfigError, unknown
from anyformer.rundir import atomic_write_text, read_json
from anyformer.tasks.raw import Raw
from anyformer.infer.generate import generate_text
from anyformer.infer.predict import predictor
from anyformer.infer.prediction_rows import prediction_rows
from anyformer.interop.hf.convert import export_hf, export_notes, import_hf
from anyformer.nn.generation import RecomputeWarning
from anyformer.studies.pipeline import pipeline, pipeline_table
from anyformer.train import train
from anyformer.train.config import run_config
from anyformer.train.evaluate import evaluate_run


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
    resume: bool = typer.Option(False, "--resume", help="continue the checkpoint in --out exactly (with compress: also skip finished stages)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="optimizer steps"),
    budget: Optional[str] = typer.Option(None, "--budget", help="stop training after this long: seconds or 90s, 10m, 1h"),
    max_time: Optional[str] = typer.Option(None, "--max-time", hidden=True, help="old name of --budget"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    skip_nonfinite: Optional[int] = typer.Option(None, "--skip-nonfinite", help="skip up to N batches with a non-finite loss"),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model"),
    track: list[str] = typer.Option([], "--track", help="log more at each evaluation: attention (each layer's attention entropy and top weights, plotted by `anyformer report RUN`)"),
) -> None:
    """Train a model on a task; writes a run directory (config, metrics, weights, state). A config
    with a `compress:` section then compresses the trained run step by step (OUT/compress/)."""
    run = _run_config(config, set_, steps=steps, max_time=parse_duration(budget or max_time), device=device, seed=seed,
                      skip_nonfinite=skip_nonfinite, compile=compile_, track=track or None)
    out = out or f"runs/{run.model.get('preset', 'model')}-{run.task.name}"
    if run.compress:  # the pipeline: train, then the config's compression steps, then eval
        result = pipeline(run, out, resume=resume, console=err_console)
        _print_summary(result["train"], out)
        console.print(pipeline_table(result))
        console.print(f"stages: {out}/pipeline.json, {out}/pipeline.csv; final run: {result['final']['run']}", highlight=False, soft_wrap=True)
        return
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
    if summary.get("init"):
        init = summary["init"]
        console.print(f"started from {init['from']}: {init['loaded']} tensors"
                      + (f"; new: {', '.join(init['fresh'])}" if init["fresh"] else ""), highlight=False, soft_wrap=True)
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


FORMATS = ("table", "csv", "json")


@app.command("predict")
def predict_cmd(
    run_dir: str = typer.Argument(..., help="a run directory written by `anyformer train`"),
    inputs: list[str] = typer.Argument(None, help="files to predict on: text lines / CSV / JSONL, a table CSV / JSONL, "
                                                  "images (PNG, JPEG, .npz x, .npy), a series CSV"),
    text: list[str] = typer.Option([], "--text", help="a text to predict on (a text or lm run); repeat for several"),
    split: Optional[str] = typer.Option(None, "--split", help="score the run's own split (e.g. test) from its original data"),
    data: Optional[str] = typer.Option(None, "--data", help="with --split: the run's data file, moved (its SHA-256 must match)"),
    format_: Optional[str] = typer.Option(None, "--format", help="table, csv or json (default: table, or by --output's suffix)"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="write the predictions to this file"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Predict with a trained run on raw inputs (labels with probabilities, forecasts, bits per byte)."""
    fmt = format_ or (Path(output).suffix.lstrip(".").lower() if output else "table")
    if fmt not in FORMATS:
        raise unknown("predict format", fmt, FORMATS)
    if fmt == "table" and output:
        raise ConfigError(f"--output {output}: a file takes csv or json; name a .csv or .json file, or pass --format csv")
    if split is None and not inputs and not text:
        raise ConfigError("nothing to predict on: give INPUT files, --text \"...\", or --split test")
    if split is not None and (inputs or text):
        raise ConfigError("--split scores the run's own data: give it without INPUT files or --text")
    model = predictor(run_dir, device)
    if split is not None:
        _print_score(run_dir, split, model.score(split, data), fmt, output)
        return
    quoted = [Raw(t, repr(t) if len(t) <= 40 else repr(t[:37]) + "...") for t in text]
    predictions = model.predict_records([*model.read_files(inputs), *quoted])
    if fmt == "json":
        _emit(json.dumps(predictions, indent=1), output)
        return
    columns, rows = prediction_rows(predictions, None if fmt == "csv" else 4)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows(rows)
        _emit(buffer.getvalue(), output)
        return
    table = Table(title=f"{len(predictions)} prediction{'s' if len(predictions) != 1 else ''} of {run_dir}")
    for c in columns:
        table.add_column(c, justify="left" if c in ("input", "label", "labels", "next") else "right")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


def _emit(text: str, output: Optional[str]) -> None:
    if output:
        atomic_write_text(output, text if text.endswith("\n") else text + "\n")
        err_console.print(f"wrote {output}", highlight=False)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _print_score(run_dir: str, split: str, scored: dict, fmt: str, output: Optional[str]) -> None:
    """The split's metrics from predict beside those the run reported when it finished."""
    summary = Path(run_dir) / "summary.json"
    reported = (read_json(summary).get("final") or {}).get(split, {}) if summary.exists() else {}
    if fmt == "json":
        _emit(json.dumps({"split": split, "metrics": scored, "reported": reported}, indent=1), output)
        return
    if fmt == "csv":
        _emit("\n".join(["metric,predict,reported"] + [f"{k},{v!r},{reported.get(k, '')!r}" for k, v in scored.items()]), output)
        return
    table = Table(title=f"{run_dir}: the {split} split from its original data")
    for c in ("metric", "predict", "reported at training", "same"):
        table.add_column(c, justify="left" if c == "metric" else "right")
    for k, v in scored.items():
        r = reported.get(k)
        table.add_row(k, f"{v:.6f}", "" if r is None else f"{r:.6f}", "" if r is None else ("yes" if r == v else f"{v - r:+.2e}"))
    console.print(table)


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


@app.command("generate")
def generate_cmd(
    run_dir: str = typer.Argument(..., help="a run of a causal language model (e.g. gpt trained on task lm)"),
    prompt: str = typer.Option(..., "--prompt", help="the text to continue"),
    max_new_tokens: int = typer.Option(200, "--max-new-tokens", min=0, help="tokens to add (bytes for a byte-level model)"),
    temperature: float = typer.Option(0.8, "--temperature", min=0.0, help="0: greedy; higher: more varied"),
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="sample among the k likeliest tokens only"),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="sample within the smallest set of probability p (nucleus)"),
    seed: int = typer.Option(0, "--seed", help="the same seed gives the same text"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Continue a prompt with a trained language model (cached incremental decoding)."""
    with warnings.catch_warnings(record=True) as notices:
        warnings.simplefilter("always", RecomputeWarning)
        text = generate_text(run_dir, prompt, max_new_tokens, temperature, top_k, top_p, seed, device)
    for notice in notices:
        err_console.print(f"note: {notice.message}", highlight=False, soft_wrap=True)
    console.print(text, highlight=False, markup=False, soft_wrap=True)
