"""Trivial baselines and per-example outcomes, declared by each problem strategy
(tasks/problems.py) and scored by compare like any model."""
import pytest
import torch

from anyformer import registry
from anyformer.compare import baseline_rows, score
from anyformer.tasks.digits import DigitsTask

CPU = torch.device("cpu")


def strategy(name):
    return registry.get("problem", name)()


def test_digits_baseline_row_is_the_majority_class_accuracy_by_hand():
    task = DigitsTask()
    splits = task.splits()
    majority = int(torch.bincount(splits["train"].target).argmax())
    by_hand = float((splits["test"].target == majority).double().mean())
    [(row, units)] = baseline_rows(task, "accuracy", True, 256, CPU)
    assert row["model"] == "majority class" and row["baseline"] is True
    assert row["quality"] == pytest.approx(by_hand, rel=1e-6)
    assert row["val"] == pytest.approx(float((splits["val"].target == majority).double().mean()))
    assert row["n_test"] == len(splits["test"]) == units.shape[0] and units.mean() == pytest.approx(by_hand)
    assert row["params"] is None and row["latency_ms"] is None and row["steps"] is None  # no cost fields
    # Its loss is that of the (smoothed) class prior: cross-entropy of the train frequencies.
    counts = torch.bincount(splits["train"].target, minlength=10).double() + 1
    prior = (counts / counts.sum()).log()
    assert row["all_metrics"]["test"]["loss"] == pytest.approx(float(-prior[splits["test"].target].mean()), rel=1e-5)


def test_forecast_baselines_last_value_and_the_seasonal_period():
    task = registry.build("task", "forecast", source="synthetic", input_len=48, horizon=8)
    splits = task.splits()
    models = task.strategy.trivial_baselines(splits["train"], splits["test"])
    # Channels: sin(2 pi t / 24), cos(2 pi t / 12), a slow trend: period 24 repeats them all.
    assert list(models) == ["last value", "seasonal naive (period 24)"]
    x, y = splits["test"].inputs, splits["test"].target
    by_hand = float((x[:, -1:, :].expand_as(y) - y).double().pow(2).mean())
    rows = {r["model"]: r for r, _ in baseline_rows(task, "mse", False, 256, CPU)}
    assert rows["last value"]["quality"] == pytest.approx(by_hand, rel=1e-6)
    seasonal = float((x[:, 24:32, :] - y).double().pow(2).mean())  # steps L-24 .. L-24+7
    assert rows["seasonal naive (period 24)"]["quality"] == pytest.approx(seasonal, rel=1e-6)
    assert rows["seasonal naive (period 24)"]["quality"] < rows["last value"]["quality"] / 5


def test_lm_unigram_predicts_the_commonest_training_token():
    task = registry.build("task", "copy", length=6, symbols=4, num_train=64, num_val=8, num_test=32)
    splits = task.splits()
    train, test = splits["train"].target, splits["test"].target
    common = int(torch.bincount(train[train != -100]).argmax())
    by_hand = float((test[test != -100] == common).double().mean())
    [(row, units)] = baseline_rows(task, "accuracy", True, 256, CPU)
    assert row["model"] == "unigram" and row["quality"] == pytest.approx(by_hand)
    assert units.shape == ((test != -100).sum().item(),)  # one outcome per scored token


@pytest.mark.parametrize("problem, output, target, metrics", [
    ("classification", torch.randn(50, 4), torch.randint(0, 4, (50,)), ["accuracy"]),
    ("multi-label", torch.randn(50, 3), torch.randint(0, 2, (50, 3)), ["accuracy", "exact_match"]),
    ("forecast", torch.randn(20, 6, 2), torch.randn(20, 6, 2), ["mse", "mae"]),
])
def test_per_example_outcomes_average_to_the_metric(problem, output, target, metrics):
    p = strategy(problem)
    values = p.metrics(output, target)
    for m in metrics:
        assert float(p.per_example(output, target, m).mean()) == pytest.approx(values[m], rel=1e-6)
    assert p.per_example(output, target, "macro_f1") is None  # no mean over examples


def test_lm_per_token_outcomes_average_to_accuracy_and_loss():
    p = strategy("lm")
    logits, target = torch.randn(4, 5, 7), torch.randint(0, 7, (4, 5))
    target[0, :2] = -100
    stats, _ = p.compact(logits, target)
    values = p.metrics(stats, torch.zeros(0))
    assert float(p.per_example(stats, None, "accuracy").mean()) == pytest.approx(values["accuracy"])
    assert float(p.per_example(stats, None, "loss").mean()) == pytest.approx(values["loss"], rel=1e-6)
    assert p.per_example(stats, None, "perplexity") is None


def test_score_gives_outcomes_only_when_they_average_to_the_metric():
    task = DigitsTask()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    metrics, units = score(model, task, "test", "accuracy", 100, CPU, "fp32")
    assert units is not None and units.mean() == pytest.approx(metrics["accuracy"])
    _, none = score(model, task, "test", "macro_f1", 100, CPU, "fp32")
    assert none is None
