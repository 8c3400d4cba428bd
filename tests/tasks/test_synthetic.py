"""Copy and associative recall: sequences, targets, ignored positions, model fit."""
import pytest
import torch

from anyformer.errors import ConfigError
from anyformer.tasks.resolve import model_for_task
from anyformer.tasks.synthetic import AssociativeRecallTask, CopyTask

from .helpers import check_model_fits


def test_copy_targets_are_the_copied_symbols():
    task = CopyTask(length=5, symbols=3, num_train=20, num_val=3, num_test=4)
    s = task.splits()
    assert [len(s[k]) for k in ("train", "val", "test")] == [20, 3, 4]
    x, y = s["train"].inputs, s["train"].target
    assert x.shape == y.shape == (20, 10) and x.dtype == torch.long
    assert (x[:, 5] == 1).all() and int(x.min()) >= 1 and int(x.max()) < task.vocab_size
    assert (y[:, :5] == -100).all()
    # Position 5 (SEP) predicts x_1, position 5 + i predicts x_{i+1}: the copy of the prefix.
    assert torch.equal(y[:, 5:], x[:, :5])
    cfg = model_for_task(None, task, dim=32, depth=1, heads=4)
    assert cfg.causal and cfg.head.name == "lm" and cfg.max_len == 10
    check_model_fits(task)


def test_copy_metrics_count_only_the_copy():
    task = CopyTask(**CopyTask.example_options)
    b = task.splits()["val"].batch(torch.arange(4))
    perfect = torch.full((*b.target.shape, task.vocab_size), -1e4)
    hit = b.target.clamp_min(0)
    perfect.scatter_(-1, hit[..., None], 1e4)
    perfect[:, :6] = 0.0  # the ignored positions: uniform, would cost log(V) if counted
    stats, tgt = task.compact(perfect, b.target)
    m = task.metrics(stats, tgt)
    assert m["accuracy"] == 1.0 and m["loss"] < 1e-6 and len(stats) == 4 * 6


def test_associative_recall_answers_the_query():
    task = AssociativeRecallTask(num_pairs=5, keys=7, values=4, num_train=30, num_val=5, num_test=5)
    s = task.splits()
    x, y = s["train"].inputs, s["train"].target
    assert x.shape == (30, 11) and y.shape == (30,) and int(y.max()) < 4
    for row, ans in zip(x.tolist(), y.tolist()):
        keys, vals = row[0:10:2], row[1:10:2]
        assert len(set(keys)) == 5 and all(k < 7 for k in keys) and all(7 <= v < 11 for v in vals)
        assert row[10] in keys and vals[keys.index(row[10])] - 7 == ans
    check_model_fits(task)


def test_associative_recall_as_lm():
    task = AssociativeRecallTask(**{**AssociativeRecallTask.example_options, "as_lm": True})
    assert task.problem == "lm"
    s = task.splits()
    x, y = s["test"].inputs, s["test"].target
    assert (y[:, :-1] == -100).all()
    for row, t in zip(x.tolist(), y[:, -1].tolist()):
        assert row[1:-1:2][row[0:-1:2].index(row[-1])] == t
    check_model_fits(task)
    assert model_for_task(None, task, dim=32, depth=1, heads=4).causal


def test_errors():
    with pytest.raises(ConfigError, match="keys .* must be >= num_pairs"):
        AssociativeRecallTask(num_pairs=10, keys=5)
    with pytest.raises(ConfigError, match="length"):
        CopyTask(length=0)
