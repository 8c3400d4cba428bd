"""Split metrics against scikit-learn on random data."""
import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from anyformer.tasks import metrics as M


@pytest.mark.parametrize("seed", range(4))
def test_accuracy_and_macro_f1_match_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(200, 6, generator=g)
    target = torch.randint(0, 5, (200,), generator=g)  # class 5 never a target, sometimes predicted
    pred = logits.argmax(-1)
    assert M.accuracy(logits, target) == pytest.approx(skm.accuracy_score(target, pred))
    # sklearn's macro F1 over the labels present in targets or predictions (its default).
    assert M.macro_f1(pred, target, 6) == pytest.approx(skm.f1_score(target, pred, average="macro"))


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    score = np.round(rng.standard_normal(150), 1)  # rounding makes ties
    label = rng.random(150) < 0.3
    assert M.roc_auc(torch.tensor(score), torch.tensor(label)) == pytest.approx(skm.roc_auc_score(label, score))
    assert math.isnan(M.roc_auc(torch.tensor(score), torch.zeros(150, dtype=torch.bool)))


def test_multilabel_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((120, 4))
    target = (rng.random((120, 4)) < 0.4).astype(float)
    m = M.multilabel_metrics(torch.tensor(logits), torch.tensor(target))
    pred = logits > 0
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(target, logits, average="macro"))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(target, pred, average="macro"))
    assert m["exact_match"] == pytest.approx(skm.accuracy_score(target, pred))
    assert m["accuracy"] == pytest.approx(1 - skm.hamming_loss(target, pred))


def test_regression_and_lm_metrics():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 7, 3)), rng.standard_normal((5, 7, 3))
    assert M.mse(torch.tensor(a), torch.tensor(b)) == pytest.approx(skm.mean_squared_error(a.ravel(), b.ravel()))
    assert M.mae(torch.tensor(a), torch.tensor(b)) == pytest.approx(skm.mean_absolute_error(a.ravel(), b.ravel()))
    logits = torch.tensor(rng.standard_normal((2, 5, 9)))
    target = torch.tensor(rng.integers(0, 9, (2, 5)))
    target[0, :2] = -100
    stats = M.lm_token_stats(logits, target)
    keep = target != -100
    probs = torch.softmax(logits[keep].double(), -1).numpy()
    nll = skm.log_loss(target[keep].numpy(), probs, labels=list(range(9)))
    m = M.lm_metrics(stats)
    assert len(stats) == 8 and m["loss"] == pytest.approx(nll, rel=1e-5) and m["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
    assert m["accuracy"] == pytest.approx(float((logits[keep].argmax(-1) == target[keep]).double().mean()))


@pytest.mark.parametrize("seed", range(3))
def test_macro_f1_with_absent_classes_matches_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (60,), generator=g)        # classes 0..2 are targets
    pred = torch.randint(0, 3, (60,), generator=g)
    pred[pred == 2] = 4                                       # 2 never predicted, 4 never a target, 3 absent from both
    expected = skm.f1_score(target, pred, average="macro", zero_division=0)
    assert M.macro_f1(pred, target, 6) == pytest.approx(expected)
    # the mean runs over the four classes present (0, 1, 2, 4); 2 and 4 score 0
    per_class = skm.f1_score(target, pred, labels=[0, 1, 2, 4], average=None, zero_division=0)
    assert per_class[2] == 0 and per_class[3] == 0 and expected == pytest.approx(per_class.mean())
    assert M.macro_f1(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), 3) == 0.0


def test_roc_auc_all_ties_is_one_half():
    assert M.roc_auc(torch.zeros(10), torch.tensor([0, 1] * 5)) == pytest.approx(0.5)
    assert math.isnan(M.roc_auc(torch.randn(5), torch.ones(5, dtype=torch.bool)))


@pytest.mark.parametrize("seed", range(3))
def test_multilabel_metrics_skip_labels_that_never_occur(seed):
    rng = np.random.default_rng(seed)
    logits = np.round(rng.standard_normal((80, 5)), 1)         # rounding makes ties
    target = (rng.random((80, 5)) < 0.4).astype(float)
    target[:, 3] = 0                                          # label 3: never a target ...
    logits[:, 3] = -1                                         # ... nor predicted: no F1, no AUC
    target[:, 4] = 1                                          # label 4: always a target: no AUC
    m = M.multilabel_metrics(torch.tensor(logits), torch.tensor(target))
    pred = logits > 0
    occur = [0, 1, 2, 4]
    assert m["macro_f1"] == pytest.approx(skm.f1_score(target[:, occur], pred[:, occur], average="macro", zero_division=0))
    assert m["roc_auc"] == pytest.approx(np.mean([skm.roc_auc_score(target[:, k], logits[:, k]) for k in (0, 1, 2)]))


def test_f1_and_auc_come_from_sklearn(monkeypatch):
    # The report: these two were hand-written; they must be scikit-learn's reference implementations.
    calls = []
    for name in ("f1_score", "roc_auc_score"):
        real = getattr(skm, name)
        monkeypatch.setattr(skm, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    M.macro_f1(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2)
    M.roc_auc(torch.tensor([0.1, 0.9, 0.4]), torch.tensor([0, 1, 0]))
    M.multilabel_metrics(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert calls == ["f1_score", "roc_auc_score", "roc_auc_score", "roc_auc_score", "f1_score"]
