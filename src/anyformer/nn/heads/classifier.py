"""Classifier heads: pool the tokens to one vector, then logits. tokens [B, L, D] -> [B, K]."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from anyformer.nn.ranges import Count, Dropout
from anyformer.registry import register


class ClassifierHead(nn.Module):
    """Pool the tokens to one vector, then a linear layer to `num_classes` logits [B, K].
    `multi_label` marks the logits as independent sigmoids (trained with BCE)."""

    paper = ""
    # The head family: a task's problem strategy names the family whose heads fit it
    # (its `head_family`), so fitting a head to a task reads this declaration.
    problem: ClassVar[str] = "classification"
    # Whether a token filter (model.token_filter) may hand the head a subset of the tokens,
    # and whether the head reads position 0 (it must then hold a prefix token: [CLS]).
    accepts_token_subset: ClassVar[bool] = True
    reads_first_token: ClassVar[bool] = False

    def __init__(self, dim: int, num_classes: Count = 2, multi_label: bool = False,
                 dropout: Dropout = 0.0) -> None:
        super().__init__()
        self.num_classes, self.multi_label = num_classes, multi_label
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def pool(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                hidden_states: list[torch.Tensor] | None = None) -> torch.Tensor:
        return self.fc(self.drop(self.pool(tokens, mask)))


@register("head", "cls")
class ClsHead(ClassifierHead):
    """Classify from the first token ([CLS], BERT / ViT). [B, L, D] -> [B, K]. `pooler`
    adds BERT's pooler, a dense layer + tanh on that token before the classifier
    (BertForSequenceClassification)."""

    paper = "BERT (Devlin et al. 2019)"
    # OT fusion (compress/fuse.py): each parameter -> the axis indexing the residual stream's
    # channels (None: independent of their order); permuting them there leaves the function unchanged.
    residual_axes: ClassVar[dict[str, int | None]] = {"fc.weight": 1, "fc.bias": None}  # the pooler (pooler.*) is not declared: refused
    reads_first_token = True

    def __init__(self, dim: int, num_classes: Count = 2, multi_label: bool = False,
                 dropout: Dropout = 0.0, pooler: bool = False) -> None:
        super().__init__(dim, num_classes, multi_label, dropout)
        # Only built when asked for: existing cls heads keep their state_dict keys.
        self.pooler = nn.Linear(dim, dim) if pooler else None

    def pool(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        first = tokens[:, 0]
        return torch.tanh(self.pooler(first)) if self.pooler is not None else first


@register("head", "mean")
class MeanHead(ClassifierHead):
    """Classify from the mean of the real tokens. [B, L, D] -> [B, K]."""

    paper = "Global average pooling (Lin et al. 2014)"
    residual_axes: ClassVar[dict[str, int | None]] = {"fc.weight": 1, "fc.bias": None}

    def pool(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return tokens.mean(1)
        w = mask.to(tokens.dtype)[..., None]
        return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


@register("head", "last")
class LastHead(ClassifierHead):
    """Classify from the last real token (causal models). [B, L, D] -> [B, K]."""

    paper = "GPT (Radford et al. 2018)"
    residual_axes: ClassVar[dict[str, int | None]] = {"fc.weight": 1, "fc.bias": None}
    accepts_token_subset = False  # the last kept token is not the last token

    def pool(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return tokens[:, -1]
        # Index of the last True per row (rows of all padding fall back to 0).
        idx = (mask.long() * torch.arange(mask.shape[1], device=mask.device)).argmax(1)
        return tokens[torch.arange(tokens.shape[0], device=tokens.device), idx]


@register("head", "attention")
class AttentionPoolHead(ClassifierHead):
    """Pool with a learned query attending over the real tokens (Set Transformer's PMA,
    Lee et al. 2019; CaiT's class attention). [B, L, D] -> [B, K]."""

    paper = "Set Transformer: pooling by multihead attention (Lee et al. 2019)"

    def __init__(self, dim: int, num_classes: Count = 2, multi_label: bool = False,
                 dropout: Dropout = 0.0) -> None:
        super().__init__(dim, num_classes, multi_label, dropout)
        self.query = nn.Parameter(torch.randn(dim) * dim ** -0.5)
        self.key = nn.Linear(dim, dim)

    def pool(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        scores = self.key(tokens) @ self.query / tokens.shape[-1] ** 0.5
        if mask is None:
            return (scores.softmax(-1)[..., None] * tokens).sum(1)
        # The lowest finite score, not -inf: a sample with no real token (all padding) gets
        # weights 0 and pools to 0, as the mean head does, instead of a NaN softmax.
        weights = scores.masked_fill(~mask, torch.finfo(scores.dtype).min).softmax(-1) * mask
        return (weights[..., None] * tokens).sum(1)
