"""A search's results, rebuilt from its storage at any time (`anyformer report DIR`):
trials.csv (every trial), front.csv (the Pareto front, `study.best_trials`), configs/
(each complete trial as a runnable run config), search_results.json (settings, counts, the
front, the hypervolume and its history), Optuna's own figures as PNG files and the page
search.html."""
from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from anyformer import rundir
from anyformer.report.search_page import figure_div, write_search_report
from anyformer.search import objectives as O
from anyformer.search.settings import Settings
from anyformer.search.storage import counts, redact

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROW_KEYS = ["number", "state", "pareto", "quality", "test", "latency_ms", "params", "memory_mb", "size_mb", "steps",
            "train_seconds", "design", "config", "retry_of", "worker", "note"]
PNG = {"pareto": "pareto_front.png", "importances": "param_importances.png", "history": "history.png",
       "hypervolume": "hypervolume.png"}


def design(candidate: dict[str, Any] | None) -> str:
    """A candidate in one short line: width x depth, heads, mixers, ffn, norm, quantization."""
    if not candidate:
        return ""
    m = candidate.get("model", {})

    def name(spec: Any) -> str:
        return spec.get("name", "?") if isinstance(spec, dict) else str(spec)

    mixers = [name(m["mixer"])] if "mixer" in m else []
    mixers += [name(o["mixer"]) for o in (m.get("schedule") or {}).get("overrides", []) if "mixer" in o]
    parts = [f"{m.get('dim', '?')}x{m.get('depth', '?')}" + (f" h{m['heads']}" if "heads" in m else "")]
    if mixers:
        parts.append("/".join(mixers))
    for key in ("ffn", "norm", "layout", "position"):
        if key in m:
            parts.append(name(m[key]))
    q = candidate.get("quantization")
    if q:
        parts.append(str(q.get("default", "mixed")))
    return " ".join(parts)


def runnable(trial: FrozenTrial, settings: Settings, search_dir: Path) -> dict[str, Any] | None:
    """The trial as a run config `anyformer train` runs: its model, the task, the training
    it had (the steps its budget bought) and, quantized, a compress step."""
    candidate = trial.user_attrs.get("candidate")
    if candidate is None:
        return None
    plan_path = search_dir / trial.user_attrs.get("folder", "") / "plan.json"
    train = {"seed": settings.seed, **settings.train, **candidate.get("train", {})}
    if plan_path.exists():
        train["steps"] = rundir.read_json(plan_path)["planned_steps"]
    config: dict[str, Any] = {"model": candidate["model"], "task": settings.task, "train": train}
    if candidate.get("quantization"):
        config["compress"] = [{"method": "quantize", "policy": candidate["quantization"]}]
    return config


def _row(trial: FrozenTrial, front: set[int]) -> dict[str, Any]:
    m = trial.user_attrs.get("measures") or {}
    costs = trial.user_attrs.get("costs") or {}
    note = trial.user_attrs.get("infeasible") or trial.user_attrs.get("error") or ""
    if trial.state == TrialState.PRUNED:
        curve = trial.user_attrs.get("curve") or {}
        note = f"pruned at {max(map(float, curve)):.0%} of training" if curve else "pruned"
    elif trial.state == TrialState.FAIL and not note:
        note = "its worker died: retried"
    return {"number": trial.number, "state": trial.state.name.lower(), "pareto": trial.number in front,
            "quality": m.get("quality", _last(trial.user_attrs.get("curve"))), "test": m.get("test"),
            **{k: m.get(k, costs.get(k)) for k in ("latency_ms", "params", "memory_mb", "size_mb")},
            "steps": m.get("steps"), "train_seconds": m.get("train_seconds"),
            "design": design(trial.user_attrs.get("candidate")),
            "config": f"configs/trial-{trial.number:04d}.yaml" if trial.state == TrialState.COMPLETE else "",
            "retry_of": trial.system_attrs.get("failed_trial"), "worker": trial.user_attrs.get("worker", ""), "note": note}


def _last(curve: dict[str, float] | None) -> float | None:
    return curve[max(curve, key=float)] if curve else None


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    return list(study.best_trials) if len(study.directions) > 1 else [study.best_trial]


def hypervolume_of(study: optuna.Study, settings: Settings) -> tuple[float, list[float]]:
    """The hypervolume of the complete trials, and after each of them (in completion order)."""
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                      key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))
    if not complete:
        return 0.0, []
    dirs = ["maximize" if d == optuna.study.StudyDirection.MAXIMIZE else "minimize" for d in study.directions]
    loss = O.losses(np.array([t.values for t in complete]), settings.objectives, dirs)
    low, high = O.bounds([loss])
    hist = O.history(loss, low, high)
    return hist[-1], hist


def _csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ROW_KEYS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    rundir.atomic_write_text(path, buf.getvalue())


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _names(settings: Settings, metric: str) -> list[str]:
    return [f"{metric} (val)" if n == "quality" else f"{n} ({O.OBJECTIVES[n].unit})" if O.OBJECTIVES[n].unit else n
            for n in settings.objectives]


def figures(study: optuna.Study, settings: Settings, metric: str, hv_history: list[float]
            ) -> tuple[dict[str, str | None], dict[str, bytes | None]]:
    """Optuna's figures (plotly for the page, matplotlib for the PNG files), each left out
    when the trials cannot make it (too few complete, one parameter value only)."""
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vm

    names = _names(settings, metric)
    first = (lambda t: t.values[0]) if len(names) > 1 else None
    pair = len(names) > 3
    makers = {
        "pareto": (lambda v: v.plot_pareto_front(study, target_names=names[:2] if pair else names,
                                                 targets=(lambda t: (t.values[0], t.values[1])) if pair else None))
        if len(names) > 1 else None,
        "importances": lambda v: v.plot_param_importances(study, target=first, target_name=names[0]),
        "history": lambda v: v.plot_optimization_history(study, target=first, target_name=names[0]),
    }
    divs: dict[str, str | None] = {}
    pngs: dict[str, bytes | None] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, make in makers.items():
            if make is None:
                continue
            try:
                divs[key] = figure_div(make(vis), f"fig-{key}")
                made = make(vm)
                pngs[PNG[key]] = _png((made if hasattr(made, "savefig") else made.figure))
            except Exception:  # noqa: BLE001  (Optuna refuses a figure the trials cannot make: leave it out)
                divs[key], pngs[PNG[key]] = None, None
    if len(hv_history) > 1:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(range(1, len(hv_history) + 1), hv_history, marker="o", ms=3)
        ax.set_xlabel("complete trials")
        ax.set_ylabel("hypervolume (normalised)")
        ax.set_title("Hypervolume of the front so far")
        ax.grid(alpha=0.3)
        pngs[PNG["hypervolume"]] = _png(fig)
    return divs, pngs


def write_results(search_dir: Path, settings: Settings, study: optuna.Study, task) -> dict[str, Any]:
    """Every results file of the search (see the module docstring); returns search_results.json."""
    search_dir = Path(search_dir)
    trials = study.get_trials(deepcopy=False)
    front = front_trials(study)
    on_front = {t.number for t in front}
    configs = search_dir / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            config = runnable(t, settings, search_dir)
            if config is not None:
                header = (f"# trial {t.number} of the search in {search_dir}: "
                          + ", ".join(f"{n} {v:.4g}" for n, v in zip(settings.objectives, t.values)) + "\n")
                rundir.atomic_write_text(configs / f"trial-{t.number:04d}.yaml", header + yaml.safe_dump(config, sort_keys=False))
    rows = [_row(t, on_front) for t in trials]
    front_rows = sorted([r for r in rows if r["pareto"]], key=lambda r: -(r["quality"] or 0) if task.higher_is_better
                        else (r["quality"] if r["quality"] is not None else math.inf))
    _csv(search_dir / "trials.csv", rows)
    _csv(search_dir / "front.csv", front_rows)
    hv, hv_history = hypervolume_of(study, settings)
    metric = settings.train.get("metric") or task.primary_metric
    c = counts(study)
    multi = len(settings.objectives) > 1
    summary = {
        "task": settings.task.get("name"), "metric": metric, "higher_is_better": task.higher_is_better,
        "objectives": settings.objectives,
        "directions_text": [f"{n} ({d})" for n, d in zip(settings.objectives, O.directions(settings.objectives, task.higher_is_better))],
        "trials_asked": settings.trials, "counts": c, "sampler": _sampler_text(settings),
        "pruning": ("dominance on validation quality at the same share of training (costs measured first)" if multi
                    else "median of validation quality at the same share of training") if settings.prune else "off",
        "storage": redact(settings.storage) if settings.storage else f"journal file {search_dir / 'study.journal'}",
        "budget": f"{settings.budget_s:g} s per trial" if settings.budget_s else f"{settings.steps} steps per trial",
        "timing": "every candidate torch.compile'd (the space quantizes)" if settings.timing == "compiled" else "eager",
        "space_file": settings.space_file or "the space",
        "hypervolume": hv, "hypervolume_history": hv_history, "reference": O.REFERENCE,
        "front": front_rows, "retried": [r["number"] for r in rows if r["retry_of"] is not None],
    }
    rundir.atomic_write_json(search_dir / "search_results.json", summary)
    divs, pngs = figures(study, settings, metric, hv_history)
    for name, png in pngs.items():
        if png is None:
            (search_dir / name).unlink(missing_ok=True)
        else:
            rundir.atomic_write_bytes(search_dir / name, png)
    write_search_report(search_dir, summary, rows, front_rows, divs, pngs)
    return summary


def _sampler_text(settings: Settings) -> str:
    if settings.sampler == "random":
        return f"random, seed {settings.seed}"
    if settings.sampler == "tpe" or len(settings.objectives) == 1:
        return f"TPE (multivariate, constant liar), seed {settings.seed}"
    return f"NSGA-II, population {settings.population_size()}, seed {settings.seed}"

