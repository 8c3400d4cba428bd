"""A search in this process: its front, runnable configs, figures and page; reruns that
continue it; settings that conflict with a search already in the folder; the command line."""
from __future__ import annotations

import csv
import importlib

import numpy as np
import optuna
import pytest
import torch
import yaml

import anyformer as af
from anyformer import catalog, rundir
from anyformer.catalog import create
from anyformer.cli import main
from anyformer.errors import ConfigError
from anyformer.search.job import report
from anyformer.search.settings import Settings
from anyformer.search.trial import Infeasible, run_trial
from anyformer.search.space import read_space
from anyformer.search.storage import open_storage
from anyformer.train.config import run_config
from anyformer.train.loop import Trainer

SPACE = {"model": {"preset": "vit", "dim": {"choice": [16, 32]}, "depth": {"int": [1, 2]}, "heads": 2,
                   "mixer": {"choice": {"softmax": {}, "linear": {}}}},
         "train": {"lr": {"float": [1e-3, 4e-3], "log": True}}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "s"
    summary = af.search("digits", SPACE, objectives="quality,params", trials=5, steps=30, out=out, device="cpu",
                        train_overrides={"eval_every": 10})
    return out, summary


def _dominates(a, b, dirs):
    better = [(x >= y if d == "maximize" else x <= y) for x, y, d in zip(a, b, dirs)]
    strictly = [(x > y if d == "maximize" else x < y) for x, y, d in zip(a, b, dirs)]
    return all(better) and any(strictly)


def test_the_front_is_the_non_dominated_set(finished):
    out, summary = finished
    assert summary["counts"]["complete"] + summary["counts"]["pruned"] == 5
    study = optuna.load_study(study_name="search", storage=open_storage(None, out))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    dirs = ["maximize", "minimize"]
    expected = {t.number for t in complete if not any(_dominates(o.values, t.values, dirs) for o in complete)}
    assert {r["number"] for r in summary["front"]} == expected
    with open(out / "front.csv") as f:
        assert {int(r["number"]) for r in csv.DictReader(f)} == expected
    # Quality is the validation metric the trial's own run measured; test is beside it.
    for t in complete:
        run = out / t.user_attrs["folder"] / "run"
        final = rundir.read_json(run / "summary.json")["final"]
        assert t.values[0] == pytest.approx(final["val"]["accuracy"])
        assert t.user_attrs["measures"]["test"] == pytest.approx(final["test"]["accuracy"])
        assert t.values[1] == sum(p.numel() for p in create(rundir.read_config(run)["model"]).parameters())
    assert 0 < summary["hypervolume"] <= 1.1 ** 2 + 1e-9
    assert np.all(np.diff(summary["hypervolume_history"]) >= -1e-12)


def test_every_result_file_is_written(finished):
    out, summary = finished
    for name in ("search.json", "study.journal", "trials.csv", "front.csv", "search_results.json", "search.html",
                 "pareto_front.png", "history.png", "hypervolume.png"):
        assert (out / name).stat().st_size > 0, name
    page = (out / "search.html").read_text()
    assert "Pareto front" in page and "plotly" in page.lower()
    for row in summary["front"]:
        assert row["config"] in page


def test_a_front_config_runs_as_it_is(finished, tmp_path):
    out, summary = finished
    path = out / summary["front"][0]["config"]
    config = run_config(str(path), {"train.steps": 3, "train.eval_every": 3})
    assert config.task.name == "digits"
    saved = yaml.safe_load(path.read_text())
    assert saved["train"]["steps"] == 30 and saved["model"]["preset"] == "vit"
    result = Trainer(config, tmp_path / "run").fit()
    assert result["steps"] == 3 and 0.0 <= result["final"]["val"]["accuracy"] <= 1.0


def test_a_rerun_continues_and_a_conflicting_one_is_refused(finished, tmp_path):
    out, summary = finished
    with pytest.raises(ConfigError, match="holds a search with other objectives"):
        af.search("digits", SPACE, objectives="quality,latency", trials=5, steps=30, out=out,
                  train_overrides={"eval_every": 10})
    more = af.search(out=out, resume=True, trials=6)
    assert more["counts"]["finished"] == 6
    study = optuna.load_study(study_name="search", storage=open_storage(None, out))
    assert len({t.number for t in study.trials}) == len(study.trials) >= 6
    # No proposal replayed: the rerun's worker is seeded with the trials already there.
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == len(params)
    rebuilt = report(out)
    assert rebuilt["counts"] == more["counts"] and rebuilt["front"] == more["front"]


def test_single_objective_uses_tpe_and_the_median_pruner(tmp_path):
    summary = af.search("digits", SPACE, objectives="quality", trials=3, steps=20, out=tmp_path / "one", device="cpu")
    assert summary["sampler"].startswith("TPE") and "median" in summary["pruning"]
    assert len(summary["front"]) == 1


def test_a_combination_that_cannot_be_built_is_infeasible(tmp_path):
    # Each value builds with the others at their first; 12 wide with 8 heads does not: found at
    # the trial, which is failed with the reason (and not counted), not at reading the space.
    space = {"model": {"preset": "vit", "dim": {"choice": [16, 12]}, "depth": 1, "heads": {"choice": [4, 8]}}}
    read_space(space)
    settings = Settings(task={"name": "digits"}, space=space, objectives=["quality", "params"], trials=1, steps=5)
    bad = {"model": {"preset": "vit", "dim": 12, "depth": 1, "heads": 8}, "train": {}, "quantization": None}
    with pytest.raises(Infeasible, match="heads"):
        run_trial(bad, tmp_path / "t", settings, catalog.build_task({"name": "digits"}), torch.device("cpu"),
                  lambda costs: None, lambda share, value: None)


def test_command_line_errors_are_one_line_exit_2(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"model": {"dim": {"choise": [1]}}}))
    with pytest.raises(SystemExit) as done:
        main(["search", "--task", "digits", "--space", str(space), "--out", str(tmp_path / "s")])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "model.dim" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as done:
        main(["search", "--task", "digits", "--space", str(space), "--objectives", "quality,speed", "--out", str(tmp_path / "s")])
    assert done.value.code == 2 and "unknown objective 'speed'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["report", str(tmp_path / "nothing")])
    assert done.value.code == 2


def test_a_space_whose_candidates_fail_stops_with_the_reason(tmp_path, monkeypatch):
    # importlib: `anyformer.search` as an attribute is af.search, the function.
    monkeypatch.setattr(importlib.import_module("anyformer.search.worker"), "FAIL_LIMIT", 0)
    # Every candidate fails at its first evaluation: digits has no metric 'f1'.
    space = {"model": {"preset": "vit", "dim": 16, "depth": 1, "heads": 2}, "train": {"metric": "f1"}}
    with pytest.raises(ConfigError, match="candidates? of the space failed .*unknown metric.*'f1'"):
        af.search("digits", space, objectives="quality,params", trials=1, steps=4, out=tmp_path / "s", device="cpu",
                  train_overrides={"eval_every": 2})
    rows = (tmp_path / "s" / "trials.csv").read_text().splitlines()
    assert len(rows) == 2 and ",fail," in rows[1]  # results written before the error
