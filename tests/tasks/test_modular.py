"""Modular arithmetic: the operation table, disjoint splits, label noise and its eval splits."""
import pytest
import torch

from anyformer.errors import ConfigError
from anyformer.tasks.modular import ModularArithmeticTask, modular_table
from anyformer.train import train
from anyformer.train.config import run_config

from .helpers import check_model_fits


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_table_is_the_operation(op):
    p = 13
    a, b, c = modular_table(p, op)
    for x, y, z in zip(a.tolist(), b.tolist(), c.tolist()):
        if op == "+":
            assert z == (x + y) % p
        elif op == "-":
            assert z == (x - y) % p
        elif op == "*":
            assert z == (x * y) % p
        else:
            assert y != 0 and (z * y) % p == x
    assert len(c) == p * (p - 1 if op == "/" else p)


def keys(split):
    return {tuple(r) for r in split.inputs.tolist()}


def test_splits_disjoint_and_tokens():
    task = ModularArithmeticTask(p=17, op="-", train_fraction=0.4)
    s = task.splits()
    assert len(s["train"]) == round(0.4 * 289) and len(s["val"]) + len(s["test"]) == 289 - len(s["train"])
    assert not keys(s["train"]) & keys(s["val"]) and not keys(s["val"]) & keys(s["test"]) and not keys(s["train"]) & keys(s["test"])
    x = s["train"].inputs
    assert x.dtype == torch.long and x.shape[1] == 4
    assert (x[:, 1] == 17).all() and (x[:, 3] == 18).all() and int(x[:, [0, 2]].max()) < 17
    assert int(s["test"].target.max()) < 17
    assert task.eval_splits() == ["val", "test", "train_clean"]
    assert "train_corrupted" not in s and len(s["train_clean"]) == len(s["train"])
    # Without noise the training labels are the true answers.
    assert torch.equal((x[:, 0] - x[:, 2]) % 17, s["train"].target)
    check_model_fits(task)
    check_model_fits(task, {"preset": "gpt"}, split="val")


def test_label_noise_corrupts_exactly_xi_of_the_training_labels():
    p = 23
    task = ModularArithmeticTask(p=p, op="*", label_noise=0.3, seed=2)
    s = task.splits()
    x, y = s["train"].inputs, s["train"].target
    truth = (x[:, 0] * x[:, 2]) % p
    wrong = y != truth
    assert int(wrong.sum()) == round(0.3 * len(y)) == len(s["train_corrupted"])
    assert len(s["train_clean"]) + len(s["train_corrupted"]) == len(y)
    # Both extra splits are scored against the true answers.
    for name in ("train_clean", "train_corrupted"):
        xs = s[name].inputs
        assert torch.equal(s[name].target, (xs[:, 0] * xs[:, 2]) % p)
    assert keys(s["train_corrupted"]) == {tuple(r) for r in x[wrong].tolist()}
    assert task.eval_splits() == ["val", "test", "train_clean", "train_corrupted"]
    # Wrong labels are spread over the other classes, never the true one.
    assert len(set(((y[wrong] - truth[wrong]) % p).tolist())) > p // 2
    # Deterministic in the seed.
    assert torch.equal(ModularArithmeticTask(p=p, op="*", label_noise=0.3, seed=2).splits()["train"].target, y)


def test_errors():
    with pytest.raises(ConfigError, match="prime for division"):
        ModularArithmeticTask(p=12, op="/")
    with pytest.raises(ConfigError, match="unknown modular op '%'"):
        ModularArithmeticTask(op="%")
    with pytest.raises(ConfigError, match="train_fraction"):
        ModularArithmeticTask(train_fraction=1.0)
    with pytest.raises(ConfigError, match="label_noise"):
        ModularArithmeticTask(label_noise=1.5)


def test_every_label_corrupted_trains_and_evaluates_without_a_clean_split(tmp_path):
    task = ModularArithmeticTask(p=7, op="+", label_noise=1.0, seed=0)
    splits = task.splits()
    assert "train_clean" not in splits and "train_clean" not in task.eval_splits()
    assert len(splits["train_corrupted"]) == len(splits["train"])
    assert not (splits["train"].target == splits["train_corrupted"].target).any()  # every label wrong
    run = run_config({"model": {"preset": "gpt", "dim": 16, "depth": 1, "heads": 2},
                      "task": {"name": "modular", "p": 7, "op": "+", "label_noise": 1.0},
                      "train": {"steps": 2, "eval_every": 2, "progress": False}}, {})
    summary = train(run, tmp_path / "run")
    assert set(summary["final"]) == {"val", "test", "train_corrupted"} and summary["steps"] == 2
