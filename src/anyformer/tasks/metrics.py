"""Metrics over whole splits: accuracy, macro-F1, ROC-AUC (multi-label), MSE, MAE, perplexity."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    return float((logits.argmax(-1) == target).float().mean())


def macro_f1(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over classes present in targets or predictions."""
    scores = []
    for c in range(num_classes):
        tp = int(((pred == c) & (target == c)).sum())
        fp = int(((pred == c) & (target != c)).sum())
        fn = int(((pred != c) & (target == c)).sum())
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(sum(scores) / len(scores)) if scores else 0.0


def roc_auc(score: torch.Tensor, label: torch.Tensor) -> float:
    """Area under the ROC curve of one binary problem, by the rank-sum (Mann-Whitney U)
    statistic with ties given their average rank; NaN when only one class is present."""
    label = label.bool()
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = score.double().argsort()
    ranks = torch.empty_like(order, dtype=torch.float64)
    ranks[order] = torch.arange(1, len(score) + 1, dtype=torch.float64)
    sorted_scores = score.double()[order]
    # Average ranks over ties.
    uniq, inverse, counts = torch.unique(sorted_scores, return_inverse=True, return_counts=True)
    if len(uniq) < len(score):
        sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks[order])
        ranks[order] = (sums / counts)[inverse]
    u = ranks[label].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def multilabel_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    pred = logits > 0
    target = target.bool()
    aucs = [roc_auc(logits[:, k], target[:, k]) for k in range(target.shape[1])]
    aucs = [a for a in aucs if not math.isnan(a)]
    f1s = []
    for k in range(target.shape[1]):
        tp = int((pred[:, k] & target[:, k]).sum())
        fp = int((pred[:, k] & ~target[:, k]).sum())
        fn = int((~pred[:, k] & target[:, k]).sum())
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return {
        "accuracy": float((pred == target).float().mean()),  # per-label accuracy
        "exact_match": float((pred == target).all(-1).float().mean()),
        "macro_f1": float(sum(f1s) / len(f1s)) if f1s else 0.0,
        "roc_auc": float(sum(aucs) / len(aucs)) if aucs else float("nan"),
    }


def mse(output: torch.Tensor, target: torch.Tensor) -> float:
    return float(F.mse_loss(output.double(), target.double()))


def mae(output: torch.Tensor, target: torch.Tensor) -> float:
    return float(F.l1_loss(output.double(), target.double()))


def lm_token_stats(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[n_real_tokens, 2]: negative log-likelihood and hit (1/0) of each non-ignored token."""
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_target = target.reshape(-1)
    keep = flat_target != -100
    nll = F.cross_entropy(flat_logits[keep], flat_target[keep], reduction="none")
    hit = (flat_logits[keep].argmax(-1) == flat_target[keep]).float()
    return torch.stack([nll, hit], dim=1)


def lm_metrics(stats: torch.Tensor) -> dict[str, float]:
    if len(stats) == 0:
        return {"loss": float("nan"), "perplexity": float("nan"), "accuracy": float("nan")}
    nll = float(stats[:, 0].mean())
    return {"loss": nll, "perplexity": math.exp(min(nll, 50.0)), "accuracy": float(stats[:, 1].mean())}
