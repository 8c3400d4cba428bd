"""The pipeline train -> compress -> eval from one run config: `anyformer train CONFIG` when
CONFIG has a `compress:` section, `af.pipeline(CONFIG, OUT)` in Python.

    compress:
      - {method: prune, neurons_fraction: 0.25, finetune_steps: 20}
      - {method: quantize, policy: int8-dynamic}

OUT is the trained run directory, as `anyformer train` writes it; each step k is applied to
the run before it (the trained one first) into its own run directory OUT/compress/<k>-<method>
(`anyformer eval`, `predict`, `bench` take each), the last one is evaluated afresh, and every
stage's quality, parameters, size on disk, weights in memory and latency go to
OUT/pipeline.json and OUT/pipeline.csv. The whole section is checked before training starts.
Resume (`--resume`): a finished training is read back, a killed one continues from its
checkpoint, and finished stages are skipped (studies/stages.py). A job above train and
compress: training never imports compression."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from anyformer import catalog, rundir
from anyformer.errors import ConfigError
from anyformer.studies.stages import parse_steps, quality_keys, run_stage
from anyformer.studies.tables import table, write_csv
from anyformer.tasks.resolve import model_for_task
from anyformer.train import train
from anyformer.train.config import RunConfig, run_config, same_run
from anyformer.train.evaluate import evaluate_run
from anyformer.train.loop import resolved_config, with_task_defaults

COLUMNS = ["stage", "step", "quality", "parameters", "size_mb", "weights_mb", "latency_ms", "memory_mb", "run"]


def stage_dir(out: Path, k: int, method: str) -> Path:
    """The run directory of step k (1-based) of the pipeline trained into `out`."""
    return Path(out) / "compress" / f"{k}-{rundir.slug(method)}"


def _check_same_training(run: RunConfig, out: Path) -> None:
    """A finished training is read back only for the same model, task and training settings
    (the compress section may change: its stages are remade as needed)."""
    task = catalog.build_task(run.task)
    now = resolved_config(run.model_copy(update={"train": with_task_defaults(run.train, task)}), model_for_task(run.model, task))
    if not same_run(rundir.read_config(out), rundir.jsonable(now)):
        raise ConfigError(f"the config's model, task or train section differs from the one {out} was trained with; "
                          "resume with the same settings (only compress: may change) or choose another --out")


def _trained(run: RunConfig, out: Path, resume: bool, console: Console) -> dict[str, Any]:
    finished = (out / "summary.json").exists()
    if finished and not resume:
        raise ConfigError(f"{out} holds a finished run; pass --resume to go on with its compression stages, or choose another --out")
    if finished:
        _check_same_training(run, out)
        console.print(f"train: finished earlier in {out}, read back", highlight=False)
        return rundir.read_json(out / "summary.json")
    return train(run, out, resume=resume)


def _row(stage: str, step: str, measured: dict[str, Any], metric: str, run: Path | str) -> dict[str, Any]:
    return {"stage": stage, "step": step, "quality": measured.get(metric), "metric": metric,
            **{k: measured.get(k) for k in ("parameters", "size_mb", "weights_mb", "latency_ms", "memory_mb")},
            "all_metrics": {k: measured[k] for k in quality_keys(measured)}, "run": str(run)}


def pipeline(config: str | Path | dict[str, Any] | RunConfig, out: str | Path, resume: bool = False,
             overrides: dict[str, Any] | None = None, console: Console | None = None) -> dict[str, Any]:
    """Train the run `config` describes (a YAML path, a dict or a RunConfig; `overrides` as
    `--set` gives them) into `out`, apply its `compress:` steps in order, evaluate the last
    stage; returns (and writes to out/pipeline.json) {task, metric, higher_is_better, train
    (the training summary), stages (a row per stage: the trained run, then each step's), final
    (the last run and its test metrics from a fresh evaluation)}."""
    run = config if isinstance(config, RunConfig) else run_config(config, overrides)
    if not run.compress:
        raise ConfigError("compress: the config has no compression steps; add e.g. compress: [{method: quantize}], "
                          "or train it without the pipeline")
    steps = parse_steps(run.compress)  # every step checked before any training
    out = Path(out)
    console = console or Console(stderr=True)
    summary = _trained(run, out, resume, console)
    records, source = [], out
    for k, step in enumerate(steps, 1):
        target = stage_dir(out, k, step.method)
        try:
            record, made = run_stage(source, step, target, device=run.train.device)
        except ConfigError as err:  # a method's own check (a fraction out of range): say which step
            raise ConfigError(f"compress[{k - 1}] ({step.method}): {err}") from None
        metric = record["metric"]
        console.print(f"[{k}/{len(steps)}] {step.label()}: {metric} {record['before'][metric]:.4f} -> {record['after'][metric]:.4f}, "
                      f"{record['before']['parameters']:,} -> {record['after']['parameters']:,} parameters"
                      + ("" if made else " (finished earlier, read back)") + f"; {target}", highlight=False, soft_wrap=True)
        records.append(record)
        source = target
    _, final = evaluate_run(source, ["test"], run.train.device)
    metric = records[0]["metric"]
    rows = [_row("train", "", records[0]["before"], metric, out)]
    rows += [_row(Path(r["run"]).name, _step_label(r), r["after"], metric, r["run"]) for r in records]
    result = {"task": summary["task"], "metric": metric, "higher_is_better": records[0]["higher_is_better"],
              "train": summary, "stages": rows, "final": {"run": str(source), "test": final["test"]}}
    rundir.atomic_write_json(out / "pipeline.json", result)
    write_csv(out / "pipeline.csv", rows, COLUMNS)
    return result


def _step_label(record: dict[str, Any]) -> str:
    return ", ".join([record["method"], *(f"{k}={v}" for k, v in record["options"].items())])


def pipeline_table(result: dict[str, Any]) -> Table:
    """Every stage's quality and costs, the final evaluation in the caption."""
    metric = result["metric"]
    final = result["final"]["test"].get(metric)
    return table(result["stages"], [("stage", "stage"), ("step", "step"), ("quality", f"test {metric}"), ("parameters", "params"),
                                    ("size_mb", "file MiB"), ("weights_mb", "weights MiB"), ("latency_ms", "latency ms"),
                                    ("memory_mb", "peak MiB")],
                 title=f"{result['task']}: train -> {len(result['stages']) - 1} compression stage(s)",
                 caption=f"final run {result['final']['run']}: test {metric} {final:.4f} (evaluated afresh)")
