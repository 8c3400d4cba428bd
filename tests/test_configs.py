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


@pytest.mark.parametrize("field,value,message", [
    ("dim", 0, "model.dim must be >= 1, got 0"),
    ("depth", -1, "model.depth must be >= 1, got -1"),
    ("heads", 0, "model.heads must be >= 1, got 0"),
    ("max_len", 0, "model.max_len must be >= 1, got 0"),
    ("dropout", 1.0, r"model.dropout must be in \[0, 1\), got 1.0"),
    ("dropout", float("nan"), r"model.dropout must be a finite number in \[0, 1\), got nan"),
    ("drop_path", float("inf"), r"model.drop_path must be a finite number in \[0, 1\), got inf"),
    ("heads", 3, r"model.dim 16 is not divisible by model.heads 3; heads could be one of \[1, 2, 4, 8, 16\]"),
])
def test_model_fields_outside_their_range_name_field_and_range(field, value, message):
    with pytest.raises(af.ConfigError, match=message) as err:
        af.model_config("gpt", **{"dim": 16, "heads": 2, field: value})
    assert "\n" not in str(err.value)


def test_a_schedule_field_outside_its_range_names_its_path():
    with pytest.raises(af.ConfigError, match=r"^model.schedule.share must be >= 1, got 0$"):
        af.model_config("gpt", schedule={"share": 0})


def test_component_options_are_named_by_their_config_path():
    with pytest.raises(af.ConfigError, match=r"^model.schedule.overrides\[0\].ffn.dropout must be in \[0, 1\), got 1.5 \(ffn 'mlp'\)$"):
        af.model_config("gpt", depth=2, schedule={"overrides": [{"layers": 0, "ffn": {"name": "mlp", "dropout": 1.5}}]})
    with pytest.raises(af.ConfigError, match=r"^model.ffn: ffn 'mlp' has no option 'drop' \(did you mean 'dropout'\?\)"):
        af.model_config("gpt", ffn={"name": "mlp", "drop": 0.1})
    with pytest.raises(af.ConfigError, match=r"^model.mixer.feature_map must be one of 'elu', 'relu', got 'rleu' \(did you mean 'relu'"):
        af.model_config("gpt", mixer={"name": "linear", "feature_map": "rleu"})


def test_every_component_annotation_resolves_into_its_option_schema():
    # options_schema falls back to untyped options when an annotation cannot be resolved,
    # which would silently drop every declared range of that component.
    import typing

    for kind in registry.KINDS:
        for name in af.list_components(kind):
            typing.get_type_hints(registry.get(kind, name).__init__, include_extras=True)
