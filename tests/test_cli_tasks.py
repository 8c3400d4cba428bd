"""Every file task from the command line, as a user types it: `--task NAME:PATH`, `--set
task.*`, `list task` / `show task NAME`, and the one-line error for a missing option."""
import csv
import json
import math
import random

import numpy as np
import pytest
import yaml

from anyformer import registry
from tests.cli_run import run_cli
from anyformer.tasks.naming import task_spec

WORDS = {"sport": ["goal", "match", "team", "score", "ball"],
         "food": ["pizza", "bread", "soup", "cheese", "apple"],
         "tech": ["code", "chip", "robot", "laptop", "server"]}


def text_csv(folder):
    """120 rows of six words, each row's words all from its class: learnable by any model."""
    rng = random.Random(0)
    path = folder / "reviews.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(120):
            label = list(WORDS)[i % 3]
            w.writerow([" ".join(rng.choice(WORDS[label]) for _ in range(6)), label])
    return path


def tabular_csv(folder):
    """Two numeric columns, one categorical, and a target that is a threshold of a + b."""
    rng = random.Random(0)
    path = folder / "rows.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "colour", "label"])
        for _ in range(120):
            a, b = rng.random(), rng.random()
            w.writerow([f"{a:.4f}", f"{b:.4f}", rng.choice(["red", "green"]), "high" if a + b > 1 else "low"])
    return path


def images_npz(folder):
    """The arrays images-npz reads: `x` (uint8 [N, H, W]) and `y` (labels); class 1 is brighter."""
    rng = np.random.default_rng(0)
    y = np.arange(80) % 2
    x = (rng.integers(0, 100, (80, 8, 8)) + 120 * y[:, None, None]).astype(np.uint8)
    path = folder / "images.npz"
    np.savez(path, x=x, y=y)
    return path


def model_rows(out_dir):
    """results.json's rows for the named models (a baseline row, if compare adds one, is not a model asked for)."""
    data = json.loads((out_dir / "results.json").read_text())
    rows = data["rows"] if isinstance(data, dict) else data
    return [r for r in rows if not r.get("baseline")]


@pytest.mark.parametrize("task, make, models", [
    ("text-csv", text_csv, ["bert", "bert+linear"]),
    ("tabular-csv", tabular_csv, ["transformer", "transformer+linear"]),
    ("images-npz", images_npz, ["vit", "vit-gap"]),
])
def test_compare_on_a_user_file(task, make, models, tmp_path, capsys):
    data, out = make(tmp_path), tmp_path / "out"
    code, stdout, stderr = run_cli(["compare", "--task", f"{task}:{data}", "--models", ",".join(models), "--steps", 3,
                                    "--set", "dim=16", "--set", "depth=1", "--out", out], capsys)
    assert code == 0, stderr
    rows = model_rows(out)
    assert sorted(r["model"] for r in rows) == sorted(models)
    assert all(isinstance(r["quality"], float) and math.isfinite(r["quality"]) for r in rows)


def test_a_required_option_may_come_from_set(tmp_path, capsys):
    # `--set task.*` is merged before the task is validated, so `path` need not be in the name.
    data, out = text_csv(tmp_path), tmp_path / "out"
    code, _, stderr = run_cli(["compare", "--task", "text-csv", "--set", f"task.path={data}", "--models", "bert",
                               "--steps", 2, "--set", "dim=16", "--set", "depth=1", "--out", out], capsys)
    assert code == 0, stderr
    assert [r["model"] for r in model_rows(out)] == ["bert"]


def test_train_takes_the_task_and_its_options_from_set(tmp_path, capsys):
    # `max_len` is a text task's own option (not the model's): it must reach the task.
    data, out = text_csv(tmp_path), tmp_path / "run"
    code, _, stderr = run_cli(["train", "--set", f"task=text-csv:{data}", "--set", "task.tokenizer=words",
                               "--set", "task.max_len=4", "--set", "preset=bert", "--set", "dim=16", "--set", "depth=1",
                               "--steps", 2, "--out", out], capsys)
    assert code == 0, stderr
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["task"]["max_len"] == 4 and config["task"]["tokenizer"] == "words"
    assert config["model"]["max_len"] == 4  # the texts (six words) were cut to 4 tokens


def _row(stdout, first_cell):
    return next(line for line in stdout.splitlines() if line.startswith(f"│ {first_cell} "))


def test_list_task_names_each_tasks_required_options(capsys):
    code, stdout, _ = run_cli(["list", "task"], capsys)
    assert code == 0
    for task in ("text-csv", "text-jsonl", "tabular-csv", "images-npz"):
        row = _row(stdout, task)
        assert f"{task}:PATH" in row and "path" in row.replace(f"{task}:PATH", "")
    assert "ucr:DATASET" in _row(stdout, "ucr")
    assert "digits" in _row(stdout, "digits")


def test_show_task_prints_every_option_with_type_default_required_description(capsys):
    code, stdout, _ = run_cli(["show", "task", "text-csv"], capsys)
    assert code == 0
    assert "--task text-csv:PATH" in stdout and "sets option 'path'" in stdout
    for option in registry.describe_options("task", "text-csv"):
        row = _row(stdout, option["name"])
        assert option["type"] in row and option["description"][:20] in row
        assert ("yes" if option["required"] else "no") in row
    assert "yes" in _row(stdout, "path") and "label" in _row(stdout, "label_column")
    assert "required: path" in stdout


@pytest.mark.parametrize("task", registry.list_components("task"))
def test_show_every_task(task, capsys):
    code, stdout, stderr = run_cli(["show", "task", task], capsys)
    assert code == 0, stderr
    assert all(_row(stdout, o["name"]) for o in registry.describe_options("task", task))


def test_show_still_takes_a_preset_and_other_kinds(capsys):
    assert run_cli(["show", "vit", "--set", "depth=1"], capsys)[0] == 0
    code, stdout, _ = run_cli(["show", "mixer", "local"], capsys)
    assert code == 0 and "window" in stdout


@pytest.mark.parametrize("args", [
    ["compare", "--task", "text-csv", "--steps", "1"],
    ["train", "--set", "task=text-csv", "--steps", "1"],
])
def test_missing_required_option_is_one_line_exit_2(args, capsys):
    code, _, stderr = run_cli(args, capsys)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, stderr
    assert "'path'" in lines[0] and "text-csv:PATH" in lines[0] and "task.path=" in lines[0]


@pytest.mark.parametrize("args", [
    ["show", "vit", "--set", "depth=1", "dim=32"],
    ["compare", "--task", "digits", "--steps", "1", "--set", "depth=1", "dim=32"],
])
def test_set_takes_one_assignment_per_flag(args, capsys):
    # `--set a=1 b=2` is not a form the CLI takes: the second assignment is a stray argument,
    # refused before anything runs (the README and every --set help say: one --set each).
    code, _, stderr = run_cli(args, capsys)
    assert code == 2 and "dim=32" in stderr


def test_a_relative_data_path_is_stored_absolute(tmp_path, monkeypatch):
    """A run records where its data is, so `anyformer eval RUN` works from any folder."""
    (tmp_path / "rel.csv").write_text("text,label\na b,x\nc d,y\n")
    monkeypatch.chdir(tmp_path)
    assert task_spec("text-csv:rel.csv").options["path"] == str(tmp_path / "rel.csv")
    assert task_spec("text-csv", path="./rel.csv").options["path"] == str(tmp_path / "rel.csv")
    assert task_spec("ucr:Toy", data_dir="d").options["data_dir"] == str(tmp_path / "d")
    assert "data_dir" not in task_spec("fashion-mnist").options  # defaults stay as the task has them
