"""Every example config in configs/ parses, and its model resolves for its task where the
task's data is at hand (the user-file examples point at files the user supplies)."""
from pathlib import Path

import pytest

import anyformer as af
from anyformer import registry
from anyformer.train.config import run_config
from anyformer.tasks.resolve import model_for_task

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
USER_FILE_TASKS = {"text-csv", "text-jsonl", "tabular-csv", "images-npz"}


def test_there_is_a_config_per_task_family():
    names = {run_config(p).task.name for p in CONFIGS}
    assert {"digits", "modular", "forecast", "fashion-mnist", "ucr", "listops", "copy",
            "associative-recall", "text-csv", "tabular-csv", "images-npz"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses_and_resolves(path):
    run = run_config(path)
    assert run.train.steps >= 1
    cls = registry.get("task", run.task.name)
    if run.task.name in USER_FILE_TASKS or run.task.name in ("fashion-mnist", "ucr", "listops"):
        return  # data the user supplies, or a generator too slow for a unit test
    options = dict(run.task.options)
    if run.task.name == "forecast":
        options["path"] = str((path.parents[1] / options["path"]).resolve()) if not Path(options["path"]).is_absolute() else options["path"]
        if not Path(options["path"]).exists():
            options = {"source": "synthetic", "input_len": 32, "horizon": 8}  # the real file is the user's
    task = cls(**options)
    model = af.create(model_for_task(run.model, task))
    batch = task.splits()["test"].batch(__import__("torch").arange(2))
    out = model(batch.inputs, **({"mask": batch.mask} if batch.mask is not None else {}))
    assert float(task.loss(out, batch.target).detach()) >= 0
