"""`anyformer study train-large-then-compress` / `af.study("train-large-then-compress", ...)`:
the experiment of "Train Large, Then Compress: Rethinking Model Size for Efficient Training
and Inference of Transformers" (Li et al. 2020). Several model sizes (width x depth) train
under one budget (compare's per-model training: the same wall-clock seconds, or steps, for
every size); each is then compressed by int8 quantization, by pruning attention heads and FFN
units down to one common parameter count (the fractions chosen per model to reach it, then a
few fine-tuning steps), and by both; every variant is evaluated, and quality is laid against
inference cost (latency; parameters and weight bytes) in a table and a figure. The paper's
finding: under a fixed budget the larger models reach better quality, and heavily compressed
large models beat lightly compressed small ones at the same size.

DIR holds models/<size>.yaml (each size's model), train/ (a compare directory: cost.json,
plan.json and seed-0/ per size), compress/<size>/{int8, pruned, pruned-int8}/ (run
directories with their stage.json), and study.json, study.csv, study.png. A rerun (or
--resume) continues: compare reads finished trainings back and continues a killed one from
its checkpoint, finished stages are read back (studies/stages.py), and the results files are
rewritten after every size, so a killed study loses no finished result."""
from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn

from anyformer import catalog, rundir
from anyformer.compare import compare, seed_dir
from anyformer.compress.measure import active_parameters
from anyformer.compress.prune_heads import head_units
from anyformer.compress.prune_neurons import ffn_units
from anyformer.compress.quantize import read_policy
from anyformer.errors import ConfigError
from anyformer.presets import load_preset
from anyformer.studies.stages import Step, run_stage
from anyformer.studies.tables import table, write_csv
from anyformer.train.config import run_config

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PAPER = "Train Large, Then Compress: Rethinking Model Size for Efficient Training and Inference of Transformers (Li et al. 2020)"
VARIANTS = ("full", "int8", "pruned", "pruned+int8")
FOLDERS = {"int8": "int8", "pruned": "pruned", "pruned+int8": "pruned-int8"}
# With no --target-params every size is pruned to this share of the smallest size's
# parameters: the smallest is compressed lightly, the largest heavily, to one size.
TARGET_SHARE = 0.75
# ... or this much above the least size every model can be pruned to, when that is larger.
REACH_MARGIN = 1.05
# Heads per size when --sizes gives none: dim / HEAD_DIM (at least one).
HEAD_DIM = 16
COLUMNS = ["size", "variant", "dim", "depth", "heads", "quality", "metric", "parameters", "weights_mb", "size_mb", "latency_ms",
           "memory_mb", "train_steps", "train_seconds", "heads_fraction", "neurons_fraction", "run"]


@dataclass
class Size:
    """One model size: width, depth and heads; `name` is its folder and row label."""

    name: str
    dim: int
    depth: int
    heads: int


def parse_sizes(sizes: str | Sequence[str]) -> list[Size]:
    """'64x2,128x4' (DIMxDEPTH, heads dim/16) or DIMxDEPTHxHEADS items -> sizes, checked."""
    items = [s.strip() for s in (sizes.split(",") if isinstance(sizes, str) else sizes) if str(s).strip()]
    if not items:
        raise ConfigError("--sizes: give at least one size, DIMxDEPTH[xHEADS], e.g. --sizes 32x1,64x2,128x4")
    out = []
    for item in items:
        found = re.fullmatch(r"(\d+)x(\d+)(?:x(\d+))?", str(item).lower())
        if not found:
            raise ConfigError(f"--sizes {item!r}: expected DIMxDEPTH or DIMxDEPTHxHEADS with positive integers, e.g. 64x2 or 64x2x4")
        dim, depth = int(found.group(1)), int(found.group(2))
        heads = int(found.group(3)) if found.group(3) else max(1, dim // HEAD_DIM)
        if min(dim, depth, heads) < 1:
            raise ConfigError(f"--sizes {item!r}: width, depth and heads must be at least 1")
        if dim % heads:
            raise ConfigError(f"--sizes {item!r}: dim {dim} is not divisible by {heads} heads; give DIMxDEPTHxHEADS with heads dividing dim")
        out.append(Size(str(item).lower(), dim, depth, heads))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"--sizes names a size twice: {', '.join(names)}")
    return out


@dataclass
class PrunePlan:
    """prune's options reaching the target, and the parameters they leave."""

    options: dict[str, float]
    expected: int


def _unit_costs(model: nn.Module) -> tuple[dict[int, tuple[int, int]], dict[tuple[int, str], tuple[int, int]]]:
    """(block -> (heads, parameters one head takes), (block, path) -> (hidden units,
    parameters one unit takes)) of the blocks whose heads / FFN units prune can remove,
    measured by removing one from each on a copy (exact for any prunable mixer and ffn)."""
    trial = copy.deepcopy(model)
    stack = trial.stack
    running = {b: [layer for layer in stack.layers_of(b) if layer not in stack.dropped] for b in range(len(stack.blocks))}
    running = {b: layers for b, layers in running.items() if layers}
    heads: dict[int, tuple[int, int]] = {}
    units: dict[tuple[int, str], tuple[int, int]] = {}
    try:
        mixers = head_units(stack, {b: ls for b, ls in running.items() if any("mixer" not in stack.skip.get(x, ()) for x in ls)})
    except ConfigError:
        mixers = {}
    try:
        ffns = ffn_units(stack, running)
    except ConfigError:
        ffns = {}
    for b, mixer in mixers.items():
        n, before = mixer.heads, active_parameters(trial)
        if n > 1:
            mixer.prune_heads(list(range(1, n)))
            heads[b] = (n, before - active_parameters(trial))
    for b, parts in ffns.items():
        for name, ffn in parts.items():
            n, before = ffn.hidden_linears()[1].in_features, active_parameters(trial)
            if n > 1:
                ffn.prune_hidden(list(range(1, n)))
                units[(b, name)] = (n, before - active_parameters(trial))
    return heads, units


def smallest_reachable(model: nn.Module) -> int:
    """The fewest parameters pruning can leave `model` with: one head and one FFN unit a layer."""
    heads, units = _unit_costs(model)
    head_cost = sum(c for _, c in heads.values()) / len(heads) if heads else 0.0
    most = sum(n - 1 for n, _ in heads.values()) * head_cost + sum((n - 1) * c for n, c in units.values())
    return active_parameters(model) - int(most)


def default_target(models: Sequence[nn.Module]) -> int:
    """TARGET_SHARE of the smallest model's parameters, or, when pruning cannot bring some
    model that low, REACH_MARGIN above the least size every model can reach."""
    share = TARGET_SHARE * min(active_parameters(m) for m in models)
    return int(round(max(share, REACH_MARGIN * max(smallest_reachable(m) for m in models))))


def prune_plan(model: nn.Module, target: int, name: str = "the model") -> PrunePlan | None:
    """The heads and neurons fractions that bring `model` closest to `target` parameters:
    the same share of its heads and of its FFN units, the heads (coarse) rounded down or up
    and the units (fine) chosen to make up the rest; None when it is no larger than the target."""
    total = active_parameters(model)
    if total <= target:
        return None
    heads, units = _unit_costs(model)
    need = total - target
    head_total = sum(n for n, _ in heads.values())
    head_cost = sum(c for _, c in heads.values()) / len(heads) if heads else 0.0
    most = (head_total - len(heads)) * head_cost + sum((n - 1) * c for n, c in units.values())
    if most < need:
        raise ConfigError(f"--target-params {target:,}: {name} ({total:,} parameters) can lose at most {int(most):,} by pruning "
                          f"heads and FFN units (every layer keeps one of each); raise --target-params to at least {total - int(most):,}")
    share = need / (head_total * head_cost + sum(n * c for n, c in units.values()))
    first = next(iter(units.values()), (1, 0))[0]
    best: tuple[float, int, int] | None = None
    for k in sorted({math.floor(share * head_total), math.ceil(share * head_total)}):
        k = max(0, min(k, head_total - len(heads)))
        rest = need - k * head_cost
        for n in range(first if units else 1):
            removed = sum(math.floor(n / first * size + 1e-9) * cost for size, cost in units.values())
            miss = abs(rest - removed)
            if best is None or miss < best[0]:
                best = (miss, k, n)
    _, k, n = best
    options: dict[str, float] = {}
    if k:
        options["heads_fraction"] = k / head_total
    if n:
        options["neurons_fraction"] = n / first
    if not options:
        return None
    removed = k * head_cost + sum(math.floor(n / first * size + 1e-9) * cost for size, cost in units.values())
    return PrunePlan(options, int(round(total - removed)))


def _model_files(out: Path, sizes: list[Size], preset: str, overrides: dict[str, Any]) -> list[Path]:
    """models/<size>.yaml for compare (its YAML model specs), written when new or changed."""
    folder = out / "models"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in sizes:
        path = folder / f"{rundir.slug(s.name)}.yaml"
        text = yaml.safe_dump({"model": {"preset": preset, **overrides, "dim": s.dim, "depth": s.depth, "heads": s.heads}},
                              sort_keys=False)
        if not path.is_file() or path.read_text() != text:
            rundir.atomic_write_text(path, text)
        paths.append(path)
    return paths


def _row(size: Size, variant: str, measured: dict[str, Any], metric: str, run: Path | str, trained: dict[str, Any],
         options: dict[str, Any]) -> dict[str, Any]:
    return {"size": size.name, "variant": variant, "dim": size.dim, "depth": size.depth, "heads": size.heads,
            "quality": measured.get(metric), "metric": metric,
            **{k: measured.get(k) for k in ("parameters", "weights_mb", "size_mb", "latency_ms", "memory_mb")},
            "train_steps": trained["steps"], "train_seconds": trained["train_seconds"],
            "heads_fraction": options.get("heads_fraction"), "neurons_fraction": options.get("neurons_fraction"),
            "run": str(run)}


def finding(rows: list[dict[str, Any]], higher: bool) -> dict[str, Any]:
    """What the rows say about the paper's two claims: the best full model under the budget,
    and at the common pruned size (pruned+int8) which original size is best, the largest
    against the smallest."""
    def best(variant: str) -> dict[str, Any] | None:
        part = [r for r in rows if r["variant"] == variant and r["quality"] is not None]
        return (max if higher else min)(part, key=lambda r: r["quality"]) if part else None

    full = sorted((r for r in rows if r["variant"] == "full"), key=lambda r: r["parameters"])
    at_target = {r["size"]: r for r in rows if r["variant"] == "pruned+int8"}
    out: dict[str, Any] = {"best_full": (best("full") or {}).get("size"), "best_at_target": (best("pruned+int8") or {}).get("size")}
    if len(full) >= 2 and full[0]["size"] in at_target and full[-1]["size"] in at_target:
        small, large = at_target[full[0]["size"]], at_target[full[-1]["size"]]
        better = large["quality"] > small["quality"] if higher else large["quality"] < small["quality"]
        out.update({"smallest": small["size"], "largest": large["size"], "largest_beats_smallest_at_target": bool(better),
                    "quality_smallest_at_target": small["quality"], "quality_largest_at_target": large["quality"]})
    return out


def figure(rows: list[dict[str, Any]], metric: str, path: Path, title: str) -> None:
    """Quality against latency and against weight bytes: a line per variant through the
    sizes (smallest to largest), each point labelled with its size."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = {"full": "o", "int8": "s", "pruned": "^", "pruned+int8": "D"}
    for variant in VARIANTS:
        part = sorted((r for r in rows if r["variant"] == variant and r["quality"] is not None),
                      key=lambda r: (r["dim"] * r["dim"] * r["depth"], r["size"]))
        if not part:
            continue
        for ax, key in ((left, "latency_ms"), (right, "weights_mb")):
            ax.plot([r[key] for r in part], [r["quality"] for r in part], marker=markers[variant], label=variant)
            for r in part:
                ax.annotate(r["size"], (r[key], r["quality"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    left.set(xlabel="latency per test batch (ms, median)", ylabel=f"test {metric}", title="quality vs latency", xscale="log")
    right.set(xlabel="weights in memory (MiB)", ylabel=f"test {metric}", title="quality vs size", xscale="log")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def study_table(result: dict[str, Any]) -> Table:
    """The study's rows on screen, the finding in the caption."""
    metric = result["metric"]
    f = result["finding"]
    caption = f"target {result['target_params']:,} parameters; best full model: {f.get('best_full')}; best at the target size: {f.get('best_at_target')}"
    return table(result["rows"], [("size", "size"), ("variant", "variant"), ("quality", f"test {metric}"), ("parameters", "params"),
                                  ("weights_mb", "weights MiB"), ("latency_ms", "latency ms"), ("train_steps", "steps"),
                                  ("heads_fraction", "heads pruned"), ("neurons_fraction", "units pruned")],
                 title=f"train large, then compress: {result['task']}, {result['budget']}", caption=caption)


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]compress"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                    TimeElapsedColumn(), console=console, disable=not console.is_terminal, transient=False)


def train_large_then_compress(task: str | dict[str, Any], sizes: str | Sequence[str], out: str | Path, *,
                              budget_s: float | None = None, steps: int | None = None, preset: str | None = None,
                              target_params: int | None = None, finetune_steps: int = 50, finetune_lr: float = 1e-4,
                              policy: str = "int8-dynamic", seed: int = 0, device: str = "auto",
                              overrides: dict[str, Any] | None = None, resume: bool = False,
                              console: Console | None = None) -> dict[str, Any]:
    """Run the study into `out` (see the module docstring); returns study.json's content:
    {task, metric, higher_is_better, budget, target_params, rows (a row per size and variant:
    quality, parameters, weights_mb, size_mb, latency_ms, training steps and seconds, the
    pruned fractions, the run directory), finding}. `task`: a name, NAME:ARG or a spec dict;
    `sizes`: '64x2,128x4' or a list of DIMxDEPTH[xHEADS]; `budget_s` (seconds per size) or
    `steps` the same for every size; `preset`: the model every size starts from (default:
    the task's baseline); `target_params`: the common size (default: default_target);
    `overrides`: --set style (train.*, task.*, model fields for every size);
    `resume`: insist that `out` already holds a study (a rerun continues either way)."""
    console = console or Console(stderr=True)
    out = Path(out)
    if resume and not (out / "train").is_dir():
        raise ConfigError(f"--resume: {out} holds no study to continue; run it without --resume to start one")
    if budget_s is not None and steps is not None:
        raise ConfigError("give --budget (seconds per size) or --steps (per size), not both")
    if target_params is not None and (isinstance(target_params, bool) or not isinstance(target_params, int) or target_params < 1):
        raise ConfigError(f"--target-params must be a positive integer (parameters), got {target_params!r}")
    if isinstance(finetune_steps, bool) or not isinstance(finetune_steps, int) or finetune_steps < 0:
        raise ConfigError(f"--finetune-steps must be an integer >= 0, got {finetune_steps!r}")
    grid = parse_sizes(sizes)
    read_policy(policy)  # a bad policy is refused before any training
    run = run_config({"task": task}, overrides)
    spec, train_over, model_over = run.task, run.train.model_dump(exclude_unset=True), run.model
    model_over.pop("preset", None)
    built = catalog.build_task(spec)
    preset = preset or built.baseline_preset()
    load_preset(preset)  # an unknown preset fails here, with a did-you-mean
    paths = _model_files(out, grid, preset, model_over)
    budget = f"{budget_s:g} s per size" if budget_s is not None else f"{steps} steps per size" if steps is not None else "the task's default steps"
    console.print(f"train large, then compress ({PAPER}): {len(grid)} sizes of {preset} on {spec.name}, {budget}",
                  highlight=False, soft_wrap=True)
    trained_results = compare(spec, [str(p) for p in paths], seeds=1, budget_s=budget_s, steps=steps, out=out / "train",
                              train_overrides=train_over, device=device, seed=seed, seed_workers=1, console=console)
    runs = {s.name: seed_dir(out / "train", paths[i].stem, 0) for i, s in enumerate(grid)}
    models = {name: catalog.load_run(d)[0] for name, d in runs.items()}
    target = target_params or default_target(list(models.values()))
    plans = {name: prune_plan(m, target, f"size {name}") for name, m in models.items()}  # every size checked before compressing
    del models
    quantize = {"policy": policy, "compiled": False}
    result: dict[str, Any] = {"task": spec.name, "metric": trained_results["metric"], "higher_is_better": trained_results["higher_is_better"],
                              "paper": PAPER, "preset": preset, "budget": budget, "budget_s": budget_s, "steps": steps,
                              "target_params": target, "policy": policy, "finetune_steps": finetune_steps, "rows": []}
    with _progress(console) as bar:
        job = bar.add_task("", total=3 * len(grid))
        for s in grid:
            trained = rundir.read_json(runs[s.name] / "summary.json")
            folder = out / "compress" / rundir.slug(s.name)

            def stage(variant: str, source: Path, step: Step) -> dict[str, Any]:
                bar.update(job, description=f"{s.name} {variant}")
                record, made = run_stage(source, step, folder / FOLDERS[variant], device=device)
                metric = record["metric"]
                bar.console.print(f"{s.name} {variant}: {metric} {record['after'][metric]:.4f}, {record['after']['parameters']:,} "
                                  f"parameters, {record['after']['weights_mb']:.3f} MiB" + ("" if made else " (finished earlier, read back)"),
                                  highlight=False, soft_wrap=True)
                bar.advance(job)
                return record

            int8 = stage("int8", runs[s.name], Step("quantize", quantize))
            metric = int8["metric"]
            rows = [_row(s, "full", int8["before"], metric, runs[s.name], trained, {}),
                    _row(s, "int8", int8["after"], metric, int8["run"], trained, {})]
            plan = plans[s.name]
            if plan is None:  # already at or under the target: pruning leaves it as it is
                rows += [dict(rows[0], variant="pruned"), dict(rows[1], variant="pruned+int8")]
                bar.advance(job, 2)
            else:
                pruned = stage("pruned", runs[s.name], Step("prune", {**plan.options, "finetune_steps": finetune_steps,
                                                                      "finetune_lr": finetune_lr}))
                both = stage("pruned+int8", Path(pruned["run"]), Step("quantize", quantize))
                rows += [_row(s, "pruned", pruned["after"], metric, pruned["run"], trained, plan.options),
                         _row(s, "pruned+int8", both["after"], metric, both["run"], trained, plan.options)]
            result["rows"] += rows
            _write(out, result)  # after every size: a killed study keeps the sizes finished
    return result


def _write(out: Path, result: dict[str, Any]) -> None:
    result["finding"] = finding(result["rows"], result["higher_is_better"])
    rundir.atomic_write_json(out / "study.json", result)
    write_csv(out / "study.csv", result["rows"], COLUMNS)
    figure(result["rows"], result["metric"], out / "study.png",
           f"{result['task']}: {result['preset']} sizes trained {result['budget']}, pruned to {result['target_params']:,} parameters")
