"""Problem strategies: the registered kind "problem", what tasks delegate to, and that the
values are those of the plain torch losses and metrics."""
import math

import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from anyformer import registry
from anyformer.errors import ConfigError
from anyformer.tasks.base import Task
from anyformer.tasks.problems import Problem

PROBLEMS = registry.list_components("problem")


def _task(problem: str, multi_label: bool = False) -> Task:
    cls = type("T", (Task,), {"problem": problem, "multi_label": multi_label})
    return cls()


def _outputs(name: str, seed: int = 0):
    """(output, target) of a batch for each problem, as a model and a task would give them."""
    g = torch.Generator().manual_seed(seed)
    if name == "classification":
        return torch.randn(40, 5, generator=g), torch.randint(0, 5, (40,), generator=g)
    if name == "multi-label":
        return torch.randn(40, 4, generator=g), (torch.rand(40, 4, generator=g) > 0.5).float()
    if name == "forecast":
        return torch.randn(6, 8, 3, generator=g), torch.randn(6, 8, 3, generator=g)
    if name != "lm":
        return registry.build("problem", name).example_batch(g)
    target = torch.randint(0, 7, (4, 9), generator=g)
    target[:, :3] = -100
    return torch.randn(4, 9, 7, generator=g), target


def test_the_four_problems_are_registered():
    assert set(PROBLEMS) >= {"classification", "multi-label", "forecast", "lm"}
    assert "problem" in registry.KINDS
    for name in PROBLEMS:
        row = registry.describe("problem", name)  # the `anyformer list` row
        assert row["kind"] == "problem" and row["paper"]


@pytest.mark.parametrize("name", PROBLEMS)
def test_directions_cover_every_metric_and_agree_with_the_primary(name):
    strategy = registry.build("problem", name)
    assert isinstance(strategy, Problem) and strategy.head_family
    output, target = _outputs(name)
    stats, kept = strategy.compact(output, target)
    if name == "lm":  # a task whose tokens are text adds each token's bytes: bits per byte
        stats = torch.cat([stats, torch.ones(len(stats), 1)], 1)
    metrics = strategy.metrics(stats, kept)
    assert set(metrics) | {"loss"} == set(strategy.metric_directions)
    assert strategy.primary_metric in metrics
    assert strategy.higher_is_better(strategy.primary_metric) is {"accuracy": True, "mse": False, "mae": False, "auc": True}[strategy.primary_metric]
    # The name heuristic the training loop used before strategies existed: every metric
    # a problem reports still points the way it said.
    for metric in strategy.metric_directions:
        assert strategy.higher_is_better(metric) == (metric.lower() not in ("loss", "mse", "mae", "rmse", "mape", "logloss", "perplexity", "bits_per_byte")), (name, metric)


def test_the_old_heuristic_cases():
    clf, fc, lm = (registry.build("problem", n) for n in ("classification", "forecast", "lm"))
    assert not clf.higher_is_better("loss") and not fc.higher_is_better("mse") and not fc.higher_is_better("mae")
    assert not lm.higher_is_better("perplexity") and not lm.higher_is_better("loss")
    assert clf.higher_is_better("accuracy") and clf.higher_is_better("macro_f1") and lm.higher_is_better("accuracy")
    assert registry.build("problem", "multi-label").higher_is_better("roc_auc")


def test_an_unknown_metric_is_an_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'accuracy'"):
        registry.build("problem", "classification").higher_is_better("acuracy")


def test_classification_values():
    task = _task("classification")
    assert task.strategy.name == "classification" and task.primary_metric == "accuracy" and task.higher_is_better
    output, target = _outputs("classification")
    assert torch.equal(task.loss(output, target), F.cross_entropy(output, target))
    m = task.metrics(*task.compact(output, target))
    pred = output.argmax(-1)
    assert m["accuracy"] == pytest.approx(float((pred == target).float().mean()))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(target, pred, average="macro"))


def test_multi_label_values():
    task = _task("classification", multi_label=True)
    assert task.strategy.name == "multi-label" and task.strategy.head_family == "classification"
    output, target = _outputs("multi-label")
    assert torch.equal(task.loss(output, target), F.binary_cross_entropy_with_logits(output, target))
    m = task.metrics(*task.compact(output, target))
    pred = (output > 0).float()
    assert m["accuracy"] == pytest.approx(float((pred == target).float().mean()))
    assert m["exact_match"] == pytest.approx(skm.accuracy_score(target, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(target, output, average="macro"))


def test_forecast_values():
    task = _task("forecast")
    assert task.primary_metric == "mse" and task.higher_is_better is False
    output, target = _outputs("forecast")
    assert torch.equal(task.loss(output, target), F.mse_loss(output, target))
    m = task.metrics(*task.compact(output, target))
    assert m["mse"] == pytest.approx(float(F.mse_loss(output, target)))
    assert m["mae"] == pytest.approx(float(F.l1_loss(output, target)))


def test_lm_values():
    task = _task("lm")
    output, target = _outputs("lm")
    want = F.cross_entropy(output.reshape(-1, 7), target.reshape(-1), ignore_index=-100)
    assert torch.equal(task.loss(output, target), want)
    stats, kept = task.compact(output, target)
    assert stats.shape == (4 * 6, 2) and kept.numel() == 0  # only real tokens are kept
    m = task.metrics(stats, kept)
    real = target != -100
    assert m["loss"] == pytest.approx(float(want), rel=1e-5)
    assert m["perplexity"] == pytest.approx(math.exp(float(want)), rel=1e-5)
    assert m["accuracy"] == pytest.approx(float((output.argmax(-1)[real] == target[real]).float().mean()))
    assert "bits_per_byte" not in m  # copy and recall symbols are no text: no bytes to count
    nbytes = torch.arange(len(stats)).remainder(3).float().add(1).unsqueeze(1)  # 1, 2 or 3 bytes a token
    m = task.metrics(torch.cat([stats, nbytes], 1), kept)
    want_bpb = float(F.cross_entropy(output[real], target[real], reduction="sum")) / (math.log(2) * float(nbytes.sum()))
    assert m["bits_per_byte"] == pytest.approx(want_bpb, rel=1e-5) and m["loss"] == pytest.approx(float(want), rel=1e-5)
    units = task.strategy.per_example(torch.cat([stats, nbytes], 1), kept, "bits_per_byte")
    assert float(units.mean()) == pytest.approx(want_bpb, rel=1e-6)  # compare's intervals resample these
    assert task.strategy.per_example(stats, kept, "bits_per_byte") is None


def test_registered_tasks_follow_their_strategy():
    forecast = registry.get("task", "forecast")(source="synthetic")
    assert forecast.primary_metric == "mse" and forecast.higher_is_better is False
    copy = registry.get("task", "copy")()
    assert copy.strategy.name == "lm" and copy.baseline_preset() == "gpt"
    recall = registry.get("task", "associative-recall")(as_lm=True)
    assert recall.strategy.name == "lm" and recall.primary_metric == "accuracy"
    assert registry.get("task", "associative-recall")().strategy.name == "classification"


def test_pooled_baseline_preset():
    assert registry.get("task", "digits")().pooled_baseline_preset == "vit-gap"
    assert registry.get("task", "digits")().baseline_preset() == "vit"
    # Per instance: Fashion-MNIST read as a pixel sequence is a token task.
    assert registry.get("task", "fashion-mnist")(as_sequence=True).pooled_baseline_preset is None
    assert registry.get("task", "forecast")(source="synthetic").pooled_baseline_preset is None
    assert registry.get("task", "listops")().pooled_baseline_preset is None


def test_multi_label_needs_a_problem_that_has_one():
    with pytest.raises(ConfigError, match="no multi-label form"):
        _task("forecast", multi_label=True).strategy


def test_a_task_that_overrides_its_objective_keeps_it():
    class Scaled(Task):
        problem = "forecast"

        def loss(self, output, target):
            return 2 * super().loss(output, target)

    output, target = _outputs("forecast")
    assert torch.equal(Scaled().loss(output, target), 2 * F.mse_loss(output, target))
