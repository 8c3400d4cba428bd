"""Objectives, hypervolume and dominance pruning: exact values on small cases."""
from __future__ import annotations

import os

import numpy as np
import optuna
import pytest

from anyformer.errors import ConfigError
from anyformer.search import objectives as O
from anyformer.search.pruning import COSTS, CURVE, DominancePruner
from anyformer.search.storage import alive, redact, worker_id
from anyformer.search.worker import sampler_seed


def test_objectives_parse_with_did_you_mean():
    assert O.parse_objectives("quality, latency") == ["quality", "latency"]
    with pytest.raises(ConfigError, match="unknown objective 'latncy' \\(did you mean 'latency'\\?\\)"):
        O.parse_objectives("quality,latncy")
    with pytest.raises(ConfigError, match="twice"):
        O.parse_objectives("quality,quality")
    assert O.directions(["quality", "params"], True) == ["maximize", "minimize"]
    assert O.directions(["quality"], False) == ["minimize"]


def test_losses_negate_quality_and_log_costs():
    loss = O.losses(np.array([[0.9, 100.0]]), ["quality", "params"], ["maximize", "minimize"])
    assert loss[0, 0] == pytest.approx(-0.9) and loss[0, 1] == pytest.approx(2.0)


def test_hypervolume_exact_in_two_dimensions():
    low, high = np.array([0.0, 0.0]), np.array([1.0, 1.0])
    # One point at the best corner dominates the whole box up to the reference 1.1.
    assert O.hypervolume(np.array([[0.0, 0.0]]), low, high) == pytest.approx(1.21)
    # Two points (0, 1) and (1, 0): 1.1 x 0.1 twice plus the 0.1 x 0.1 corner... computed exactly.
    two = O.hypervolume(np.array([[0.0, 1.0], [1.0, 0.0]]), low, high)
    assert two == pytest.approx(1.1 * 0.1 + 0.1 * 1.0)
    # A dominated point adds nothing; the history never decreases.
    with_dominated = O.hypervolume(np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]), low, high)
    assert with_dominated == pytest.approx(two)
    hist = O.history(np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]), low, high)
    assert all(b >= a for a, b in zip(hist, hist[1:])) and hist[-1] > two


def _finished(study, costs, curve, value):
    study.add_trial(optuna.create_trial(values=[value, costs["params"]], user_attrs={COSTS: costs, CURVE: curve}))


def test_dominance_pruning_cuts_only_the_beaten_and_costlier():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for _ in range(3):
        _finished(study, {"params": 100.0}, {"0.50": 0.8, "1.00": 0.9}, 0.9)
    pruner = DominancePruner(["params"], higher_is_better=True, startup=3, peers=2, min_share=0.3)
    # Costlier and worse at the same share: beaten by the three.
    assert pruner.should_prune(study, {"params": 200.0}, 0.5, 0.5)
    # Cheaper: possibly on the front whatever its quality, never pruned for quality alone.
    assert not pruner.should_prune(study, {"params": 50.0}, 0.5, 0.1)
    # Better at the same share: kept.
    assert not pruner.should_prune(study, {"params": 200.0}, 0.5, 0.85)
    # Too early in training: kept.
    assert not pruner.should_prune(study, {"params": 200.0}, 0.2, 0.1)
    # Before `startup` finished trials nothing is pruned.
    assert not DominancePruner(["params"], True, startup=5).should_prune(study, {"params": 200.0}, 0.5, 0.1)


def test_workers_reseed_and_know_who_is_alive():
    seeds = {sampler_seed(0, k, n) for k in range(4) for n in (0, 7)}
    assert len(seeds) == 8  # per worker and per rerun
    first = [optuna.create_study(sampler=optuna.samplers.NSGAIISampler(seed=s)).ask().suggest_float("x", 0, 1)
             for s in (sampler_seed(0, 0, 0), sampler_seed(0, 1, 0), sampler_seed(0, 0, 0))]
    assert first[0] != first[1] and first[0] == first[2]  # other workers differ; one worker is reproducible
    me = worker_id()
    assert alive(me) is True
    host, pid, started = me.split(":")
    assert alive(f"{host}:{pid}:{int(started) + 1}") is False  # a reused pid is another process
    assert alive(f"another-host-{host}:1:1") is None
    assert redact("postgresql://bob:secret@db:5432/s") == "postgresql://bob:***@db:5432/s"
    assert redact("postgresql://bob@db/s") == "postgresql://bob@db/s"


def test_the_journal_sweep_fails_and_retries_only_dead_workers_trials(tmp_path):
    from anyformer.search.storage import open_storage, sweep_stale

    study = optuna.create_study(storage=open_storage(None, tmp_path), study_name="s")
    host = worker_id().split(":")[0]
    dead = study.ask()
    dead.suggest_int("x", 0, 9)
    dead.set_user_attr("worker", f"{host}:{os.getpid()}:1")  # this pid, another start time: a dead process
    dead.set_user_attr("folder", "trials/0000")
    live = study.ask()
    live.suggest_int("x", 0, 9)
    live.set_user_attr("worker", worker_id())
    assert sweep_stale(study) == [dead.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[dead.number] == optuna.trial.TrialState.FAIL and states[live.number] == optuna.trial.TrialState.RUNNING
    retry = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]
    assert len(retry) == 1 and retry[0].system_attrs["failed_trial"] == dead.number
    assert retry[0].params == study.get_trials()[dead.number].params
    assert retry[0].user_attrs["folder"] == "trials/0000"
    assert sweep_stale(study) == []  # nothing is failed twice
