"""Problem strategies (kind "problem"): what a task's targets are, how outputs are scored,
which metrics it reports and which way each is better, and which head family fits it.

A task names its strategy by its `problem` attribute ('classification', 'forecast', 'lm');
a problem with a multi-label form declares it (`multi_label_variant`), which a task with
`multi_label` set uses instead. A new problem is one new class here (or in a new module of
this package) with one `@register("problem", name)` line.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import unknown
from anyformer.registry import register
from anyformer.tasks import metrics as M


class SplitLike(Protocol):
    """What a trivial baseline reads of a split (tasks.base.Split, which imports this module)."""

    inputs: Any
    target: torch.Tensor

    def batch(self, index: torch.Tensor) -> Any: ...


class ConstantOutput(nn.Module):
    """A trivial baseline: the same output for every example, whatever its inputs (a class
    prior's logits, a unigram's log-probabilities per position)."""

    def __init__(self, value: torch.Tensor, per_position: bool = False) -> None:
        super().__init__()
        self.register_buffer("value", value)
        self.per_position = per_position

    def forward(self, inputs: Any, mask: torch.Tensor | None = None) -> torch.Tensor:
        first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
        shape = (first.shape[0], first.shape[1]) if self.per_position else (first.shape[0],)
        return self.value.expand(*shape, *self.value.shape)


class SeasonalNaive(nn.Module):
    """Forecast each of the next `horizon` steps as the value one `period` earlier,
    repeating the input's last period (period 1: the last value, held)."""

    def __init__(self, period: int, horizon: int) -> None:
        super().__init__()
        self.period, self.horizon = period, horizon

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        length = inputs.shape[1]
        index = length - self.period + torch.arange(self.horizon, device=inputs.device) % self.period
        return inputs[:, index]


class Problem:
    """Base of every problem strategy: loss, compact, metrics and metric directions.

    Shapes are those of the model output and the targets of one batch (loss, compact) or of
    a whole split's compacted outputs concatenated (metrics); each subclass states its own."""

    paper: ClassVar[str] = ""
    # The head family whose heads fit this problem: heads declare theirs as `problem`.
    head_family: ClassVar[str] = ""
    # The metric a run selects its best weights by and compare reports, unless a task or the
    # run config names another.
    primary_metric: ClassVar[str] = ""
    # metric -> True when a higher value is better, for every metric `metrics` reports and
    # for 'loss', which evaluation adds to every split's metrics.
    metric_directions: ClassVar[dict[str, bool]] = {}
    # metric -> the (low, high) values it can take, so an interval never claims a value the
    # metric cannot reach (an accuracy above 1, a negative MSE). Unlisted: unbounded.
    metric_ranges: ClassVar[dict[str, tuple[float, float]]] = {"loss": (0.0, math.inf)}
    # What `per_example` scores one of: a comparison's test-set size is counted in these.
    test_unit: ClassVar[str] = "example"
    # The registered name of this problem's multi-label form, used by tasks with
    # `multi_label` set; None when the problem has none.
    multi_label_variant: ClassVar[str | None] = None
    # True when targets are the inputs' next tokens, so the model must be causal (the
    # baseline for token inputs is then a decoder).
    needs_causal: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return getattr(self, "registry_name", type(self).__name__)

    def example_batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A random (output, target) batch of this problem's shapes and target values: what
        the registry-wide contract tests score for a problem they do not know by name."""
        raise NotImplementedError(f"problem {self.name!r} declares no example_batch")

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of one batch."""
        raise NotImplementedError

    def compact(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shrink one batch's output before it is kept for `metrics` (identity by default)."""
        return output, target

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Metrics over a whole split: the `compact` outputs of every batch, concatenated."""
        raise NotImplementedError

    def per_example(self, output: torch.Tensor, target: torch.Tensor, metric: str) -> torch.Tensor | None:
        """Per-unit scores [n] of a split's compact outputs whose mean is `metric` (a hit per
        example for accuracy, a squared error for MSE), for intervals and paired tests; None
        when the metric is no mean over units (macro-F1, perplexity)."""
        return None

    def describe(self, output: torch.Tensor, names: list[str]) -> list[dict[str, Any]]:
        """Each example's prediction as a person reads it, from the model's outputs of a
        batch of examples (`names`: the class names, or the forecast channels)."""
        raise NotImplementedError(f"problem {self.name!r} does not describe its predictions")

    def trivial_baselines(self, train: SplitLike, test: SplitLike) -> dict[str, nn.Module]:
        """Models that need no training, fitted on `train` (`test` gives output shapes only),
        scored like any model on the task's own metrics: what a comparison must beat. Name
        -> a module called as model(inputs, mask=...)."""
        return {}

    def higher_is_better(self, metric: str) -> bool:
        """Whether a higher `metric` is better; a ConfigError naming the valid metrics when
        this problem reports no such metric."""
        if metric not in self.metric_directions:
            raise unknown(f"metric of problem {self.name!r}", metric, self.metric_directions)
        return self.metric_directions[metric]

    def metric_range(self, metric: str) -> tuple[float, float]:
        """The (low, high) values `metric` can take; (-inf, inf) when unbounded or unknown."""
        return self.metric_ranges.get(metric, (-math.inf, math.inf))


@register("problem", "classification")
class Classification(Problem):
    """Single-label classification by cross-entropy (softmax over K classes; Bishop 2006,
    "Pattern Recognition and Machine Learning", sec. 4.3.4). output logits [N, K], target
    class indices [N]; metrics: accuracy and macro-F1 over the classes."""

    paper = "Pattern Recognition and Machine Learning (Bishop 2006), sec. 4.3.4; macro-F1 (Sokolova & Lapalme 2009)"
    head_family = "classification"
    primary_metric = "accuracy"
    metric_directions = {"accuracy": True, "macro_f1": True, "loss": False}
    metric_ranges = {"accuracy": (0.0, 1.0), "macro_f1": (0.0, 1.0), "loss": (0.0, math.inf)}
    multi_label_variant = "multi-label"

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target)

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return {"accuracy": M.accuracy(output, target), "macro_f1": M.macro_f1(output.argmax(-1), target, output.shape[-1])}

    def per_example(self, output: torch.Tensor, target: torch.Tensor, metric: str) -> torch.Tensor | None:
        if metric == "accuracy":
            return (output.argmax(-1) == target).double()
        if metric == "loss":
            return F.cross_entropy(output.double(), target, reduction="none")
        return None

    def describe(self, output: torch.Tensor, names: list[str]) -> list[dict[str, Any]]:
        """{label, probability, probabilities: {class: p}} per example; output logits [N, K]."""
        probs = output.float().softmax(-1)
        best = probs.argmax(-1).tolist()
        return [{"label": names[k], "probability": float(p[k]), "probabilities": dict(zip(names, p.tolist()))}
                for k, p in zip(best, probs)]

    def trivial_baselines(self, train: SplitLike, test: SplitLike) -> dict[str, nn.Module]:
        """The majority class, as the logits of the training class frequencies (add-one
        smoothed, so its loss is that of the class prior too). The test labels only size
        the output, so a class absent from training still counts in macro-F1."""
        classes = int(max(train.target.max(), test.target.max())) + 1
        counts = torch.bincount(train.target, minlength=classes).double() + 1.0
        return {"majority class": ConstantOutput((counts / counts.sum()).log().float())}


@register("problem", "multi-label")
class MultiLabelClassification(Problem):
    """Multi-label classification: K independent sigmoids trained by binary cross-entropy
    (Zhang & Zhou 2014, "A Review on Multi-Label Learning Algorithms"). output logits
    [N, K], target multi-hot [N, K]; metrics: per-label accuracy, exact match, macro-F1 and
    macro ROC-AUC over the labels."""

    paper = "A Review on Multi-Label Learning Algorithms (Zhang & Zhou 2014)"
    head_family = "classification"
    # Per-label accuracy, as before strategies existed: runs keep selecting as they did.
    primary_metric = "accuracy"
    metric_directions = {"accuracy": True, "exact_match": True, "macro_f1": True, "roc_auc": True, "loss": False}
    metric_ranges = {**{m: (0.0, 1.0) for m in ("accuracy", "exact_match", "macro_f1", "roc_auc")}, "loss": (0.0, math.inf)}

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output, target.to(output.dtype))

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return M.multilabel_metrics(output, target)

    def per_example(self, output: torch.Tensor, target: torch.Tensor, metric: str) -> torch.Tensor | None:
        # Every example has the same K labels, so the mean of per-example shares is the
        # per-label accuracy over the split.
        hits = (output > 0) == target.bool()
        if metric == "accuracy":
            return hits.double().mean(-1)
        if metric == "exact_match":
            return hits.all(-1).double()
        return None

    def describe(self, output: torch.Tensor, names: list[str]) -> list[dict[str, Any]]:
        """{labels: those with probability >= 0.5 (logit > 0, as the metrics count a hit),
        probabilities: {label: p}} per example; output logits [N, K]."""
        probs = output.float().sigmoid()
        return [{"labels": [n for n, x in zip(names, o.tolist()) if x > 0], "probabilities": dict(zip(names, p.tolist()))}
                for o, p in zip(output, probs)]

    def trivial_baselines(self, train: SplitLike, test: SplitLike) -> dict[str, nn.Module]:
        """Each label's majority value, as the logit of its (add-one smoothed) training frequency."""
        rate = (train.target.double().sum(0) + 1.0) / (len(train.target) + 2.0)
        return {"majority per label": ConstantOutput(torch.logit(rate).float())}


@register("problem", "forecast")
class Forecast(Problem):
    """Time-series forecasting by mean squared error, reported as MSE and MAE (as in
    Informer, Zhou et al. 2021). output and target [N, H, C]: H future steps of C series."""

    paper = "Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting (Zhou et al. 2021)"
    head_family = "forecast"
    primary_metric = "mse"
    metric_directions = {"mse": False, "mae": False, "loss": False}
    metric_ranges = {"mse": (0.0, math.inf), "mae": (0.0, math.inf), "loss": (0.0, math.inf)}
    test_unit = "window"

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output, target.to(output.dtype))

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return {"mse": M.mse(output, target), "mae": M.mae(output, target)}

    def per_example(self, output: torch.Tensor, target: torch.Tensor, metric: str) -> torch.Tensor | None:
        # Every window has the same H x C values: the mean of window means is the split's.
        err = output.double() - target.double()
        if metric in ("mse", "loss"):
            return err.pow(2).flatten(1).mean(1)
        if metric == "mae":
            return err.abs().flatten(1).mean(1)
        return None

    def describe(self, output: torch.Tensor, names: list[str]) -> list[dict[str, Any]]:
        """{forecast: {channel: [value per step]}} per example; output [N, H, C] (a task that
        scaled its series gives the values back in the data's units first)."""
        return [{"forecast": dict(zip(names, o.T.tolist()))} for o in output.float()]

    def trivial_baselines(self, train: SplitLike, test: SplitLike) -> dict[str, nn.Module]:
        """The last value held over the horizon, and seasonal naive with the period (2 ..
        input length) whose forecasts of the training windows err least. Only for inputs
        that are the past of the targets' own series ([N, L, C] beside [N, H, C])."""
        sample = train.batch(torch.arange(min(len(train.target), 2048)))  # enough windows to pick a period
        x, y = sample.inputs, sample.target
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or y.dim() != 3 or x.shape[2] != y.shape[2]:
            return {}
        horizon = int(test.target.shape[1])
        baselines: dict[str, nn.Module] = {"last value": SeasonalNaive(1, horizon)}
        periods = range(2, int(x.shape[1]) + 1)
        if periods:
            y = y[:, :horizon]
            errors = {p: float((SeasonalNaive(p, horizon)(x) - y).pow(2).mean()) for p in periods}
            best = min(errors, key=errors.get)
            baselines[f"seasonal naive (period {best})"] = SeasonalNaive(best, horizon)
        return baselines


@register("problem", "lm")
class LanguageModelling(Problem):
    """Next-token prediction by cross-entropy over the tokens whose target is not -100
    (Bengio et al. 2003, "A Neural Probabilistic Language Model"). output logits [N, L, V],
    target token ids [N, L]; metrics: mean token loss, perplexity and next-token accuracy,
    and bits per byte when the task's `compact` adds each token's bytes of text as a third
    column (the `lm` task does; copy and recall symbols are no text, and report none)."""

    paper = "A Neural Probabilistic Language Model (Bengio et al. 2003)"
    head_family = "lm"
    # Next-token accuracy, as before strategies existed (the recall and copy tasks score
    # by it); a run can select by perplexity with train.metric. The `lm` task selects by
    # bits per byte.
    primary_metric = "accuracy"
    metric_directions = {"loss": False, "perplexity": False, "accuracy": True, "bits_per_byte": False}
    metric_ranges = {"loss": (0.0, math.inf), "perplexity": (1.0, math.inf), "accuracy": (0.0, 1.0),
                     "bits_per_byte": (0.0, math.inf)}
    test_unit = "token"  # per_example scores every real target token, not a sequence
    needs_causal = True

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1), ignore_index=-100)

    def compact(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LM logits [N, L, V] are huge: keep each real token's negative log-likelihood and
        hit [n_real, 2] instead (the targets are then no longer needed). A task may append
        a third column, the bytes of text each token stands for (see `metrics`)."""
        return M.lm_token_stats(output, target), target.new_zeros(0)

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return M.lm_metrics(output)

    def per_example(self, output: torch.Tensor, target: torch.Tensor, metric: str) -> torch.Tensor | None:
        """Per scored token (the compact [n_tokens, 2 or 3] rows): its hit, its loss, or its
        bits over the split's mean bytes per token (their mean is the split's bits per byte)."""
        if metric == "bits_per_byte":
            if output.shape[1] < 3 or len(output) == 0:
                return None
            return output[:, 0].double() / (math.log(2) * float(output[:, 2].double().mean()))
        column = {"accuracy": 1, "loss": 0}.get(metric)
        return None if column is None else output[:, column].double()

    def trivial_baselines(self, train: SplitLike, test: SplitLike) -> dict[str, nn.Module]:
        """A unigram model: every position predicts the training targets' token frequencies
        (add-one smoothed over the ids seen in either split)."""
        seen = train.target[train.target != -100]
        if len(seen) == 0:
            return {}
        vocab = int(max(seen.max(), test.target.max())) + 1
        counts = torch.bincount(seen, minlength=vocab).double() + 1.0
        return {"unigram": ConstantOutput((counts / counts.sum()).log().float(), per_position=True)}
