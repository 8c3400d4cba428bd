"""`anyformer continual SEQUENCE.yaml` / `af.continual(SEQUENCE, OUT)`: continual fine-tuning
with selective initialisation, after "Towards Robust and Efficient Continual Language
Learning" (Fisch et al. 2023). Tasks arrive one after another; for each new task the learner
chooses its initialisation among from-scratch and the checkpoints it trained on every past
task, by a cheap probe: a short fine-tune from each candidate on the new task's training
data, scored on its validation split (by loss unless `probe.metric` says otherwise); the best
probe wins (a past checkpoint only when it
beats scratch by more than `probe.margin`). The chosen candidate is then trained in full and
becomes that task's checkpoint for the tasks after it.

To check the choice against the truth every candidate is also trained in full under the same
budget (the transfer matrix: each task's test score from scratch and from each earlier
task's checkpoint), over `seeds` repeats of the whole sequence. A cell is negative transfer
when it scores worse than scratch beyond the seed and test-set noise (a paired two-level
bootstrap over seeds and test units, stats.paired_bootstrap_pvalue, at 5%), positive when
better beyond it. With one seed only the test-set noise counts: use several seeds before
reading a flag as a property of the initialisation rather than of one training.

OUT holds seed-<k>/<i>-<task>/probe/<init>/ and seed-<k>/<i>-<task>/<init>/ (ordinary run
directories: `anyformer eval`, `predict` take each; <init> is `scratch` or `from-<task>`),
then continual.json, transfer_matrix.csv and transfer_matrix.png, rewritten after every
task. A rerun continues: a finished run is read back (when its config is the same), a killed
one continues from its checkpoint."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from rich.console import Console
from rich.table import Table

from anyformer import catalog, rundir, stats
from anyformer.compare.job import train_here
from anyformer.compare.scoring import seed_outcomes
from anyformer.config import read_yaml
from anyformer.errors import ConfigError
from anyformer.runtime import resolve_device
from anyformer.studies.continual_config import SequenceConfig, SequenceTask, parse_sequence
from anyformer.studies.tables import table, write_csv
from anyformer.tasks.base import Task
from anyformer.tasks.resolve import model_for_task
from anyformer.train.config import RunConfig, same_run
from anyformer.train.loop import resolved_config, with_task_defaults

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PAPER = "Towards Robust and Efficient Continual Language Learning (Fisch et al. 2023)"
SCRATCH = "scratch"
ALPHA = 0.05  # the level at which a cell differs from scratch beyond the noise
COLUMNS = ["task", "init", "test_mean", "test_low", "test_high", "delta_vs_scratch", "p_value", "transfer", "chosen",
           "best", "probe_val_mean", "seeds"]


def init_name(label: str) -> str:
    """The folder and column name of an initialisation from the checkpoint of task `label`."""
    return f"from-{label}"


def _apply_sets(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`--set` keys on a sequence: seeds=N, train.X, probe.X, model.X (or a bare model field)."""
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head == "seeds" and not rest:
            data["seeds"] = value
        elif head in ("train", "probe") and rest:
            data[head] = {**(data.get(head) or {}), rest: value}
        else:
            model = data.get("model") or {}
            model = {"preset": model} if isinstance(model, str) else dict(model)
            model[rest if head == "model" and rest else key] = value
            data["model"] = model
    return data


def _checked(run: RunConfig, run_dir: Path, task: Task) -> None:
    now = resolved_config(run.model_copy(update={"train": with_task_defaults(run.train, task)}), model_for_task(run.model, task))
    if not same_run(rundir.read_config(run_dir), rundir.jsonable(now)):
        raise ConfigError(f"{run_dir} holds a finished run of another config; rerun with the same sequence or choose another --out")


def _trained(run: RunConfig, run_dir: Path, task: Task, label: str, console: Console) -> tuple[dict[str, Any], bool]:
    """(the run's summary, True when it trained now): read back when finished with this config."""
    if (run_dir / "summary.json").exists():
        _checked(run, run_dir, task)
        return rundir.read_json(run_dir / "summary.json"), False
    return train_here(run, run_dir, task, label, console), True


def _candidate_run(base: RunConfig, init: Path | None, seed: int, steps: int | None = None) -> RunConfig:
    """The task's run from `init` (None: scratch) with the repeat's seed; `steps` for a probe
    (evaluated once, at its end; warmup at most a tenth of it)."""
    update: dict[str, Any] = {"seed": seed, "init": None if init is None else str(init)}
    if steps is not None:
        update.update(steps=steps, eval_every=steps, warmup_steps=min(base.train.warmup_steps, steps // 10))
    train = base.train.model_copy(update=update)
    return RunConfig(model=dict(base.model), task=base.task, train=train)


def choose(probes: dict[str, float], higher: bool, margin: float) -> str:
    """The learner's rule: the candidate with the best probe validation score; a past
    checkpoint must beat scratch's by more than `margin`, else scratch (also on a tie)."""
    sign = 1.0 if higher else -1.0
    def gain(name: str) -> float:
        value = probes[name]
        return -math.inf if value is None or not math.isfinite(value) else sign * value
    best = max(probes, key=lambda name: (gain(name), name == SCRATCH))
    if best != SCRATCH and gain(best) - gain(SCRATCH) <= margin:
        return SCRATCH
    return best


def _task_steps(step: SequenceTask, task: Task) -> int:
    return with_task_defaults(step.run.train, task).steps


def _cell_stats(outcomes: dict[str, list[np.ndarray | None]], scores: dict[str, list[float]], higher: bool) -> dict[str, dict[str, Any]]:
    """Per initialisation: the mean test score over seeds with its interval (two-level
    bootstrap when per-unit outcomes exist, else Student t), the difference to scratch, its
    p-value and whether it is positive / negative transfer beyond the noise."""
    cells: dict[str, dict[str, Any]] = {}
    mats = {k: np.stack(v) for k, v in outcomes.items() if v and all(o is not None for o in v)}
    for name, values in scores.items():
        mean = float(np.mean(values))
        if name in mats:
            low, high = stats.bootstrap_interval(mats[name])
        else:
            low, high = stats.t_interval(values)
        cell: dict[str, Any] = {"test_mean": mean, "test_low": low, "test_high": high, "test_seeds": list(values)}
        if name != SCRATCH:
            delta = mean - float(np.mean(scores[SCRATCH]))
            if name in mats and SCRATCH in mats:
                p = stats.paired_bootstrap_pvalue(mats[SCRATCH], mats[name])
            else:
                p = stats.welch_pvalue(scores[SCRATCH], values)
            better = delta > 0 if higher else delta < 0
            transfer = ("positive" if better else "negative") if p < ALPHA and delta != 0 else "none"
            cell.update(delta_vs_scratch=delta, p_value=p, transfer=transfer)
        cells[name] = cell
    return cells


def _task_record(step: SequenceTask, inits: list[str], seeds_done: list[dict[str, Any]], higher: bool, metric: str
                 ) -> dict[str, Any]:
    scores = {n: [s["full"][n]["test"] for s in seeds_done] for n in inits}
    outcomes = {n: [s["full"][n]["outcomes"] for s in seeds_done] for n in inits}
    cells = _cell_stats(outcomes, scores, higher)
    sign = 1.0 if higher else -1.0
    best = max(inits, key=lambda n: (sign * cells[n]["test_mean"], n == SCRATCH))
    picks = [s["choice"] for s in seeds_done]
    for n in inits:
        cells[n]["chosen"] = picks.count(n)
        cells[n]["best"] = n == best
        probe = [s["probes"][n] for s in seeds_done if n in s["probes"]]
        cells[n]["probe_val_mean"] = float(np.mean(probe)) if probe else None
    learner = [s["full"][s["choice"]]["test"] for s in seeds_done]
    # The choice is right within the noise when the best cell is not better beyond it.
    usual = max(set(picks), key=picks.count)
    mats = {n: np.stack(outcomes[n]) for n in (usual, best) if all(o is not None for o in outcomes[n])}
    if usual == best:
        tied = True
    elif len(mats) == 2:
        tied = stats.paired_bootstrap_pvalue(mats[usual], mats[best]) >= ALPHA
    else:
        tied = stats.welch_pvalue(scores[usual], scores[best]) >= ALPHA
    return {"task": step.label, "spec": step.run.task.model_dump(mode="json"), "metric": metric, "higher_is_better": higher,
            "inits": inits, "cells": cells, "best": best, "usual_choice": usual,
            "chose_best_share": float(np.mean([s["choice"] == s["best"] for s in seeds_done])),
            "choice_within_noise": tied, "learner_mean": float(np.mean(learner)),
            "regret_mean": float(np.mean([s["regret"] for s in seeds_done])),
            "seeds": [{k: v for k, v in s.items() if k != "full"} | {"full": {n: s["full"][n]["test"] for n in inits}}
                      for s in seeds_done]}


def continual(sequence: str | Path | dict[str, Any], out: str | Path, *, seeds: int | None = None, device: str | None = None,
              overrides: dict[str, Any] | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the sequence (a YAML path or dict; `overrides` as `--set` gives them: seeds=N,
    train.X, probe.X, model.X) into `out`: per repeat and task the probes, the learner's
    choice and every candidate trained in full. Returns continual.json's content: {paper,
    sequence, seeds, probe, tasks: [a record per task: cells (per initialisation: test mean,
    interval, per-seed scores, difference to scratch, p-value, transfer, times chosen,
    best), best, usual_choice, chose_best_share, choice_within_noise, learner_mean, seeds
    (each repeat's probe scores, choice, best and regret)]}."""
    data = read_yaml(sequence) if not isinstance(sequence, dict) else dict(sequence)
    data = _apply_sets(data, dict(overrides or {}))
    if seeds is not None:
        data["seeds"] = seeds
    if device is not None:
        data["train"] = {**(data.get("train") or {}), "device": device}
    seq, steps = parse_sequence(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True)
    tasks = [catalog.build_task(s.run.task) for s in steps]
    for i, (step, task) in enumerate(zip(steps, tasks)):
        task.splits()
        try:  # every metric checked before any training
            task.strategy.higher_is_better(seq.probe.metric)
        except ConfigError as err:
            raise ConfigError(f"probe.metric (tasks[{i}] {step.label}): {err}") from None
    chains: list[dict[str, Path]] = [{} for _ in range(seq.seeds)]  # per repeat: task label -> its learner checkpoint
    records: list[dict[str, Any]] = []
    for i, (step, task) in enumerate(zip(steps, tasks)):
        inits = [SCRATCH] + [init_name(s.label) for s in steps[:i]]
        n_steps = _task_steps(step, task)
        higher = task.strategy.higher_is_better(step.run.train.metric or task.primary_metric)
        probe_metric = seq.probe.metric
        probe_higher = task.strategy.higher_is_better(probe_metric)
        probe_steps = seq.probe.steps_for(n_steps)
        done = []
        for k in range(seq.seeds):
            seed = step.run.train.seed + k
            folder = out / f"seed-{k}" / f"{i}-{step.label}"
            sources = {SCRATCH: None} | {init_name(s.label): chains[k][s.label] for s in steps[:i]}
            where = f"task {i + 1}/{len(steps)} {step.label}, seed {seed}:"
            probes: dict[str, float] = {}
            if i > 0:  # the first task has nothing to choose from
                for name, source in sources.items():
                    summary, _ = _trained(_candidate_run(step.run, source, seed, probe_steps), folder / "probe" / name, task,
                                          f"{where} probe {name}", console)
                    probes[name] = summary["final"]["val"][probe_metric]
            choice = choose(probes, probe_higher, seq.probe.margin) if probes else SCRATCH
            full: dict[str, dict[str, Any]] = {}
            for name, source in sources.items():
                run_dir = folder / name
                summary, _ = _trained(_candidate_run(step.run, source, seed), run_dir, task, f"{where} {name}", console)
                metric = summary["metric"]
                full[name] = {"test": summary["final"]["test"][metric], "run": str(run_dir),
                              "outcomes": seed_outcomes(run_dir, task, metric, step.run.train.eval_batch_size,
                                                        resolve_device(step.run.train.device), summary.get("precision") or "fp32")}
            sign = 1.0 if higher else -1.0
            best = max(inits, key=lambda n: (sign * full[n]["test"], n == SCRATCH))
            chains[k][step.label] = folder / choice
            done.append({"seed": seed, "probes": probes, "choice": choice, "best": best,
                         "regret": sign * (full[best]["test"] - full[choice]["test"]), "full": full})
            shown = ", ".join(f"{n} {v:.4f}" for n, v in probes.items())
            console.print(f"{where} " + (f"probe val {probe_metric}: {shown}; chose {choice}; " if probes else "")
                          + f"test {metric}: " + ", ".join(f"{n} {full[n]['test']:.4f}" for n in inits), highlight=False, soft_wrap=True)
        records.append(_task_record(step, inits, done, higher, metric))
        result = _write(out, seq, steps, records, probe_steps_of(seq, steps, tasks))
    return result


def probe_steps_of(seq: SequenceConfig, steps: list[SequenceTask], tasks: list[Task]) -> dict[str, int]:
    return {s.label: seq.probe.steps_for(_task_steps(s, t)) for s, t in zip(steps, tasks)}


def _rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        for name in r["inits"]:
            c = r["cells"][name]
            rows.append({"task": r["task"], "init": name, **{k: c.get(k) for k in COLUMNS if k in c},
                         "seeds": len(c["test_seeds"]), "metric": r["metric"]})
    return rows


def _write(out: Path, seq: SequenceConfig, steps: list[SequenceTask], records: list[dict[str, Any]],
           probe_steps: dict[str, int]) -> dict[str, Any]:
    result = {"paper": PAPER, "sequence": [s.label for s in steps], "seeds": seq.seeds,
              "probe": {**seq.probe.model_dump(), "steps_per_task": probe_steps}, "tasks": records}
    rundir.atomic_write_json(out / "continual.json", result)
    write_csv(out / "transfer_matrix.csv", _rows(records), COLUMNS)
    transfer_figure(result, out / "transfer_matrix.png")
    return rundir.read_json(out / "continual.json")


def transfer_figure(result: dict[str, Any], path: Path) -> None:
    """Heatmap: rows the tasks, columns the initialisations, each cell the difference of its
    mean test score to scratch's on that task (green better, red worse; the scratch column
    shows the score itself); a box marks the learner's usual choice, ! negative transfer."""
    tasks = result["tasks"]
    columns = [SCRATCH] + [init_name(label) for label in result["sequence"][:-1]]
    grid = np.full((len(tasks), len(columns)), np.nan)
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(columns), 1.0 + 0.7 * len(tasks)))
    for i, r in enumerate(tasks):
        sign = 1.0 if r["higher_is_better"] else -1.0
        for j, name in enumerate(columns):
            cell = r["cells"].get(name)
            if cell is None:
                continue
            if name == SCRATCH:
                text = f"{cell['test_mean']:.3f}"
            else:
                grid[i, j] = sign * cell["delta_vs_scratch"]
                text = f"{cell['delta_vs_scratch']:+.3f}" + ("!" if cell["transfer"] == "negative" else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
            if name == r["usual_choice"]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="black"))
    bound = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
    image = ax.imshow(grid, cmap="RdYlGn", vmin=-bound, vmax=bound, aspect="auto")
    fig.colorbar(image, ax=ax, label="test score - scratch (better is +)")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(tasks)), [r["task"] for r in tasks], fontsize=8)
    ax.set_xlabel("initialisation")
    ax.set_title(f"transfer matrix ({result['seeds']} seed{'s' if result['seeds'] != 1 else ''}); box: learner's choice", fontsize=9)
    fig.tight_layout()
    buffer_path = path.with_name(path.name + ".tmp.png")
    fig.savefig(buffer_path, dpi=110)
    plt.close(fig)
    buffer_path.replace(path)


def continual_table(result: dict[str, Any]) -> Table:
    """Every task x initialisation: test score, difference to scratch, transfer, probe and choice."""
    rows = []
    for r in result["tasks"]:
        for name in r["inits"]:
            c = r["cells"][name]
            rows.append({"task": r["task"], "init": name, "test": c["test_mean"], "delta": c.get("delta_vs_scratch"),
                         "p": c.get("p_value"), "transfer": c.get("transfer", ""), "probe": c.get("probe_val_mean"),
                         "chosen": f"{c['chosen']}/{len(r['seeds'])}" if len(r["inits"]) > 1 else "",
                         "best": "best" if c["best"] and len(r["inits"]) > 1 else ""})
    learner = "; ".join(f"{r['task']}: chose best in {r['chose_best_share']:.0%} of seeds"
                        + ("" if r["choice_within_noise"] else " (usual choice worse than the best beyond noise)")
                        for r in result["tasks"][1:])
    return table(rows, [("task", "task"), ("init", "init"), ("test", "test"), ("delta", "vs scratch"), ("p", "p"),
                        ("transfer", "transfer"), ("probe", "probe val"), ("chosen", "chosen"), ("best", "truth")],
                 title=f"continual: {' -> '.join(result['sequence'])} ({result['seeds']} seed(s))", caption=learner)
