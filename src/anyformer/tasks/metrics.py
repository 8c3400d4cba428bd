"""Metrics over whole splits: accuracy, macro-F1, ROC-AUC (multi-label), MSE, MAE, perplexity,
bits per byte.

Macro-F1 and ROC-AUC are scikit-learn's (the reference implementations, ties and absent
classes included), imported on first use: importing sklearn.metrics takes about a second."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    return float((logits.argmax(-1) == target).float().mean())


def macro_f1(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in targets or predictions
    (scikit-learn's macro F1; a class never predicted, or never a target, scores 0)."""
    if len(target) == 0:
        return 0.0
    from sklearn.metrics import f1_score  # imported when a split is scored: sklearn.metrics takes ~1 s to import
    present = torch.unique(torch.cat([pred.reshape(-1), target.reshape(-1)])).tolist()
    labels = [c for c in present if 0 <= c < num_classes] or present
    return float(f1_score(target.cpu().numpy(), pred.cpu().numpy(), labels=labels, average="macro", zero_division=0))


def roc_auc(score: torch.Tensor, label: torch.Tensor) -> float:
    """Area under the ROC curve of one binary problem (scikit-learn's, ties counted half);
    NaN when only one class is present."""
    label = label.bool()
    if bool(label.all()) or not bool(label.any()):
        return float("nan")
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(label.cpu().numpy(), score.double().cpu().numpy()))


def multilabel_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Per-label accuracy, exact match, macro F1 over the labels that occur (in targets or
    predictions) and macro ROC-AUC over the labels with both classes present."""
    pred = logits > 0
    target = target.bool()
    aucs = [roc_auc(logits[:, k], target[:, k]) for k in range(target.shape[1])]
    aucs = [a for a in aucs if not math.isnan(a)]
    occur = (pred | target).any(0)
    if bool(occur.any()):
        from sklearn.metrics import f1_score
        f1 = float(f1_score(target[:, occur].cpu().numpy(), pred[:, occur].cpu().numpy(), average="macro", zero_division=0))
    else:
        f1 = 0.0
    return {
        "accuracy": float((pred == target).float().mean()),  # per-label accuracy
        "exact_match": float((pred == target).all(-1).float().mean()),
        "macro_f1": f1,
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
    """Mean token loss (nats), perplexity and next-token accuracy of `lm_token_stats` rows;
    with a third column, the UTF-8 bytes of text each token stands for (a task that knows
    them adds it), also bits per byte: the total NLL in bits over the total bytes."""
    with_bytes = stats.dim() == 2 and stats.shape[1] > 2
    if len(stats) == 0:
        return {"loss": float("nan"), "perplexity": float("nan"), "accuracy": float("nan"),
                **({"bits_per_byte": float("nan")} if with_bytes else {})}
    nll = float(stats[:, 0].mean())
    out = {"loss": nll, "perplexity": math.exp(min(nll, 50.0)), "accuracy": float(stats[:, 1].mean())}
    if with_bytes:
        out["bits_per_byte"] = bits_per_byte(stats[:, 0], stats[:, 2])
    return out


def bits_per_byte(nll: torch.Tensor, nbytes: torch.Tensor) -> float:
    """Total negative log-likelihood (nats) of the tokens, in bits, per UTF-8 byte of the
    text they stand for: sum(nll) / (ln 2 * sum(bytes)); for byte tokens, loss / ln 2."""
    total = float(nbytes.double().sum())
    return float(nll.double().sum()) / (math.log(2) * total) if total > 0 else float("nan")
