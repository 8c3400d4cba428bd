"""A search worker: takes trials from the study until the search has as many as it asked
for, finished or running. `--workers K` starts K of these as processes on one storage
(`python -m anyformer.search.worker DIR INDEX`); a worker on another machine is the same
command against the same `--storage` URL. Each worker's sampler is seeded from the search's
seed, its index and the trials already in the study, so workers (and reruns) never replay
one another's proposals."""
from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from anyformer import catalog
from anyformer.errors import AnyformerError, ConfigError
from anyformer.runtime import resolve_device
from anyformer.search import storage as S
from anyformer.search.objectives import OBJECTIVES, directions
from anyformer.search.pruning import COSTS, CURVE, DominancePruner, median_pruner
from anyformer.search.settings import Settings
from anyformer.search.space import read_space
from anyformer.search.trial import Infeasible, run_trial, trial_dir

STORAGE_ENV = "ANYFORMER_SEARCH_STORAGE"  # the storage URL with its password, never written to disk
# Failed candidates (infeasible or crashed) tolerated beyond the trial count before the
# search stops: a space where most candidates cannot be built is a space to fix.
FAIL_LIMIT = 10


def sampler_seed(seed: int, index: int, existing: int) -> int:
    return int(np.random.SeedSequence([seed, index, existing]).generate_state(1)[0])


def make_sampler(settings: Settings, seed: int) -> optuna.samplers.BaseSampler:
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "tpe" or len(settings.objectives) == 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, settings.trials // 3)),
                                              multivariate=True, group=True, constant_liar=True)
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=settings.population_size())


def open_study(settings: Settings, search_dir: Path, sampler: optuna.samplers.BaseSampler | None = None,
               create: bool = False) -> optuna.Study:
    url = os.environ.get(STORAGE_ENV) or settings.storage
    store = S.open_storage(url, search_dir, settings.heartbeat_s, settings.grace_s)
    task = catalog.build_task(settings.task)
    dirs = directions(settings.objectives, task.higher_is_better)
    pruner = median_pruner() if len(dirs) == 1 and settings.prune else optuna.pruners.NopPruner()
    if create:
        study = optuna.create_study(storage=store, study_name=settings.study, directions=dirs, load_if_exists=True,
                                    sampler=sampler, pruner=pruner)
        if list(study.directions) != [optuna.study.StudyDirection.MAXIMIZE if d == "maximize"
                                      else optuna.study.StudyDirection.MINIMIZE for d in dirs]:
            raise ConfigError(f"study {settings.study!r} in that storage optimises other objectives; choose another --study")
        return study
    return optuna.load_study(study_name=settings.study, storage=store, sampler=sampler, pruner=pruner)


class Worker:
    """One worker's loop over trials (see the module docstring)."""

    def __init__(self, search_dir: Path, index: int, on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None) -> None:
        self.dir, self.index, self.on_trial = search_dir, index, on_trial
        self.settings = Settings.load(search_dir)
        self.space = read_space(self.settings.space)
        self.task = catalog.build_task(self.settings.task)
        self.task.splits()
        self.device = resolve_device(self.settings.device)
        existing = len(open_study(self.settings, search_dir).trials)
        self.study = open_study(self.settings, search_dir,
                                make_sampler(self.settings, sampler_seed(self.settings.seed, index, existing)))
        self.lock = S.NextTrialLock(search_dir, os.environ.get(STORAGE_ENV) or self.settings.storage)
        self.cost_keys = [OBJECTIVES[n].key for n in self.settings.objectives if OBJECTIVES[n].cost]
        self.pruner = DominancePruner(self.cost_keys, self.task.higher_is_better)

    def run(self) -> int:
        """Trials until the quota is reached; returns how many this worker finished."""
        done = 0
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        while True:
            self.lock.acquire()
            try:
                S.sweep_stale(self.study, self.lock.url)
                c = S.counts(self.study)
                if c["finished"] + c["running"] >= self.settings.trials:
                    return done
                failed = self._failed()
                if failed > FAIL_LIMIT + self.settings.trials // 2:
                    raise ConfigError(f"{failed} candidate{'s' if failed != 1 else ''} of the space failed ({self._first_error()}); fix the "
                                      "space, then rerun the same command to continue")
                self.study.optimize(self._objective, n_trials=1, catch=(Exception,),
                                    callbacks=[self._finished] if self.on_trial else None)
            finally:
                self.lock.release()
            done += 1

    def _failed(self) -> int:
        """Trials whose candidate failed (not those whose worker died: they are retried)."""
        return sum(1 for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                   if "infeasible" in t.user_attrs or "error" in t.user_attrs)

    def _first_error(self) -> str:
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            reason = t.user_attrs.get("infeasible") or t.user_attrs.get("error")
            if reason:
                return f"trial {t.number}: {reason}"
        return "no reason recorded"

    def _finished(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.on_trial is not None:
            self.on_trial(trial)

    def _objective(self, trial: optuna.Trial) -> list[float]:
        trial.set_user_attr(S.WORKER, S.worker_id())
        self.lock.release()  # the trial is RUNNING and named: others may take the next one now
        try:
            return self._evaluate(trial)
        except (Infeasible, optuna.TrialPruned):
            raise
        except Exception as err:  # noqa: BLE001  (the candidate failed: recorded, the search goes on)
            trial.set_user_attr("error", f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")
            raise

    def _evaluate(self, trial: optuna.Trial) -> list[float]:
        # A retry inherits its first attempt's user attributes, the folder among them: it
        # resumes the killed attempt's checkpoint there.
        folder = trial.user_attrs.get("folder") or str(trial_dir(self.dir, trial.number).relative_to(self.dir))
        trial.set_user_attr("folder", folder)
        candidate = self.space.sample(trial)
        trial.set_user_attr("candidate", candidate)
        curve: dict[str, float] = dict(trial.user_attrs.get(CURVE) or {})
        measured: dict[str, float] = {}

        def on_costs(costs: dict[str, float]) -> None:
            measured.update(costs)
            trial.set_user_attr(COSTS, costs)

        def on_eval(share: float, value: float) -> None:
            if not math.isfinite(value):
                return
            curve[f"{share:.2f}"] = value
            trial.set_user_attr(CURVE, curve)
            if not self.settings.prune:
                return
            if len(self.settings.objectives) == 1:
                trial.report(value, int(round(share * 100)))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"quality {value:.4g} at {share:.0%} of training is below the median")
            elif self.pruner.should_prune(self.study, measured, share, value):
                raise optuna.TrialPruned(f"quality {value:.4g} at {share:.0%} of training is beaten by cheaper trials")

        try:
            measures = run_trial(candidate, self.dir / folder, self.settings, self.task, self.device, on_costs, on_eval)
        except Infeasible as err:
            trial.set_user_attr("infeasible", str(err))
            raise
        trial.set_user_attr("measures", measures)
        return [measures[OBJECTIVES[n].key] for n in self.settings.objectives]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    search_dir, index = Path(argv[0]), int(argv[1])
    threads = int(os.environ.get("ANYFORMER_SEARCH_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    try:
        Worker(search_dir, index).run()
    except AnyformerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
