"""`anyformer search` / `af.search(...)`: the settings checked and saved, the study created,
the workers run (in this process, or K processes on one storage), the results written."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from anyformer import catalog
from anyformer.errors import ConfigError, unknown
from anyformer.search import storage as S
from anyformer.search.objectives import parse_objectives
from anyformer.search.results import design, write_results
from anyformer.search.settings import SAMPLERS, SETTINGS, Settings
from anyformer.search.space import read_space
from anyformer.search.worker import STORAGE_ENV, Worker, open_study

DEFAULT_BUDGET_S = 15.0
DEFAULT_TRIALS = 30
POLL_S = 1.0
TIMINGS = ("eager", "compiled")


def _settings(task: str | dict[str, Any] | None, space: str | Path | dict[str, Any] | None, objectives: str | list[str],
              trials: int, budget_s: float | None, steps: int | None, storage: str | None, study: str, workers: int,
              seed: int, sampler: str, population: int | None, device: str, timing: str | None,
              train_overrides: dict[str, Any] | None, prune: bool, heartbeat_s: int, grace_s: int) -> Settings:
    if task is None or space is None:
        raise ConfigError("search: give --task and --space (or --resume with the --out of an earlier search)")
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if sampler not in SAMPLERS:
        raise unknown("--sampler", sampler, SAMPLERS)
    if timing is not None and timing not in TIMINGS:
        raise unknown("--timing", timing, TIMINGS)
    if population is not None and population < 2:
        raise ConfigError(f"--population must be at least 2 (NSGA-II crosses two parents), got {population}")
    if budget_s is not None and budget_s <= 0:
        raise ConfigError(f"--budget must be positive, got {budget_s}")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {steps}")
    names = parse_objectives(objectives)
    parsed = read_space(space)
    spec = {"name": task} if isinstance(task, str) else dict(task)
    catalog.build_task(spec)  # an unknown task or option fails here, with a did-you-mean
    return Settings(task=spec, space=parsed.raw, objectives=names, trials=trials,
                    budget_s=None if steps is not None else (budget_s or DEFAULT_BUDGET_S), steps=steps, seed=seed,
                    sampler=sampler, population=population, workers=workers, device=device,
                    storage=S.redact(storage) if storage else None, study=study,
                    timing=timing or ("compiled" if parsed.has_quantization() else "eager"),
                    train=dict(train_overrides or {}), heartbeat_s=heartbeat_s, grace_s=grace_s, prune=prune,
                    space_file=str(space) if not isinstance(space, dict) else "")


def trial_line(trial: FrozenTrial, settings: Settings, metric: str, done: int) -> str:
    m = trial.user_attrs.get("measures") or {}
    head = f"[{done}/{settings.trials}] trial {trial.number}"
    if trial.system_attrs.get("failed_trial") is not None:
        head += f" (retry of {trial.system_attrs['failed_trial']})"
    what = design(trial.user_attrs.get("candidate"))
    if trial.state == TrialState.COMPLETE:
        costs = f"latency {m.get('latency_ms', float('nan')):.3g} ms, params {m.get('params', 0):,.0f}"
        return f"{head}: {metric} {m.get('quality', float('nan')):.4f} (val), {costs}; {what}"
    if trial.state == TrialState.PRUNED:
        return f"{head}: pruned; {what}"
    reason = trial.user_attrs.get("infeasible") or trial.user_attrs.get("error") or "its worker died; retried"
    return f"{head}: failed ({reason}); {what}"


def search(task: str | dict[str, Any] | None = None, space: str | Path | dict[str, Any] | None = None, *,
           objectives: str | list[str] = "quality,latency", trials: int | None = None, budget_s: float | None = None,
           steps: int | None = None, out: str | Path = "runs/search", storage: str | None = None, study: str = "search",
           workers: int = 1, seed: int = 0, sampler: str = "nsga2", population: int | None = None, device: str = "auto",
           timing: str | None = None, train_overrides: dict[str, Any] | None = None, prune: bool = True,
           resume: bool = False, heartbeat_s: int = S.HEARTBEAT_S, grace_s: int = S.GRACE_S, console=None) -> dict[str, Any]:
    """Search the space for the Pareto front of `objectives` on `task` with `trials` trials
    (complete or pruned; default 30), each trained `budget_s` seconds (or `steps`), on `workers`
    processes sharing one storage (the journal file in `out`, or `storage`, an SQLAlchemy
    URL). A rerun with the same settings, or `resume=True` with `out` alone, continues the
    study. Returns search_results.json's content (also written to `out` with the front,
    every trial's runnable config, figures and search.html)."""
    console = console or Console(stderr=True)
    out = Path(out)
    if resume:
        settings = Settings.load(out)
        settings.trials = trials or settings.trials  # a resumed search may be asked for more trials
        settings.workers = workers
    else:
        settings = _settings(task, space, objectives, trials or DEFAULT_TRIALS, budget_s, steps, storage, study, workers, seed, sampler,
                             population, device, timing, train_overrides, prune, heartbeat_s, grace_s)
        if (out / SETTINGS).exists():
            earlier = Settings.load(out)
            changed = earlier.differences(settings)
            if changed:
                raise ConfigError(f"{out} holds a search with other {', '.join(changed)}; rerun it with the same "
                                  "settings (or --resume) to continue it, or choose another --out")
    url = storage or settings.storage
    if url is not None and "***" in url:
        raise ConfigError(f"{out}: its storage needs a password; give it again with --storage URL")
    out.mkdir(parents=True, exist_ok=True)
    settings.save(out)
    env_url = {STORAGE_ENV: url} if url else {}
    os.environ.update(env_url)
    study_obj = open_study(settings, out, create=True)
    task_obj = catalog.build_task(settings.task)
    metric = settings.train.get("metric") or task_obj.primary_metric
    before = S.counts(study_obj)
    console.print(f"search: {settings.trials} trials on {settings.task['name']}, objectives {', '.join(settings.objectives)}, "
                  f"{settings.workers} worker{'s' if settings.workers > 1 else ''}, "
                  f"{'steps ' + str(settings.steps) if settings.steps else f'budget {settings.budget_s:g} s'} per trial, "
                  f"storage {S.redact(url) if url else out / S.JOURNAL}"
                  + (f"; {before['finished']} finished earlier" if before["finished"] else ""), highlight=False, soft_wrap=True)
    try:
        if settings.workers == 1:
            _in_process(out, settings, metric, console, before["finished"])
        else:
            _processes(out, settings, metric, console, env_url)
    finally:  # a search stopped by an error still writes what it has
        with S.NextTrialLock(out, url):
            S.sweep_stale(study_obj, url)
        summary = write_results(out, settings, study_obj, task_obj)
    c = summary["counts"]
    if c["finished"] < settings.trials:
        console.print(f"{c['finished']} of {settings.trials} trials finished; rerun the same command to continue",
                      highlight=False)
    return summary


def _in_process(out: Path, settings: Settings, metric: str, console, done: int) -> None:
    count = [done]

    def on_trial(trial: FrozenTrial) -> None:
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            count[0] += 1
        console.print(trial_line(trial, settings, metric, count[0]), highlight=False, soft_wrap=True)

    Worker(out, 0, on_trial=on_trial).run()


def _processes(out: Path, settings: Settings, metric: str, console, env_url: dict[str, str]) -> None:
    """K worker processes, each with its share of the cores; a line per trial as the storage
    shows it finished, a progress bar of the quota."""
    logs = out / "workers"
    logs.mkdir(exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // settings.workers)
    env = {**os.environ, **env_url, "ANYFORMER_SEARCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    procs = []
    for k in range(settings.workers):
        log = open(logs / f"worker-{k}.log", "ab")
        p = subprocess.Popen([sys.executable, "-m", "anyformer.search.worker", str(out), str(k)], env=env,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (logs / f"worker-{k}.pid").write_text(str(p.pid))
        procs.append((p, log))
    study = open_study(settings, out)
    seen: set[int] = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))}
    columns = [TextColumn("search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            job = bar.add_task("trials", total=settings.trials, completed=S.counts(study)["finished"])
            while True:
                running = [p for p, _ in procs if p.poll() is None]
                done = S.counts(study)["finished"]
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
                    if t.number not in seen:
                        seen.add(t.number)
                        bar.console.print(trial_line(t, settings, metric, done), highlight=False, soft_wrap=True)
                bar.update(job, completed=done)
                if not running:
                    break
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        for p, _ in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        raise
    finally:
        for _, log in procs:
            log.close()
    for k, (p, _) in enumerate(procs):
        if p.returncode == 2:
            tail = (logs / f"worker-{k}.log").read_text(errors="replace").strip().splitlines()
            line = next((x for x in reversed(tail) if x.startswith("error: ")), f"error: worker {k} stopped")
            raise ConfigError(line[len("error: "):])
        if p.returncode not in (0, 2):
            how = f"killed by signal {-p.returncode}" if p.returncode < 0 else f"exit code {p.returncode}"
            console.print(f"worker {k} ended ({how}); see {logs / f'worker-{k}.log'}; its trial is retried", highlight=False)



def report(search_dir: str | Path) -> dict[str, Any]:
    """Rebuild every results file of a search from its storage (`anyformer report DIR`)."""
    out = Path(search_dir)
    settings = Settings.load(out)
    if settings.storage is not None and "***" in settings.storage and STORAGE_ENV not in os.environ:
        raise ConfigError(f"{out}: its storage needs a password; set {STORAGE_ENV}=URL")
    return write_results(out, settings, open_study(settings, out), catalog.build_task(settings.task))
