"""Task heads. Contract: `(tokens [B, L, D], mask Bool[B, L] | None, hidden_states) -> output`;
`hidden_states` holds every layer's output for heads that pool across layers."""
from __future__ import annotations

import torch
from torch import nn

from anyformer.errors import ConfigError, ShapeError
from anyformer.registry import register


class ClassifierHead(nn.Module):
    """Pool the tokens to one vector, then a linear layer to `num_classes` logits [B, K].
    `multi_label` marks the logits as independent sigmoids (trained with BCE)."""

    paper = ""
    problem = "classification"

    def __init__(self, dim: int, num_classes: int = 2, multi_label: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"head: num_classes must be >= 1, got {num_classes}")
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
    """Classify from the first token ([CLS], BERT / ViT). [B, L, D] -> [B, K]."""

    paper = "BERT (Devlin et al. 2019)"

    def pool(self, tokens, mask):
        return tokens[:, 0]


@register("head", "mean")
class MeanHead(ClassifierHead):
    """Classify from the mean of the real tokens. [B, L, D] -> [B, K]."""

    paper = "Global average pooling (Lin et al. 2014)"

    def pool(self, tokens, mask):
        if mask is None:
            return tokens.mean(1)
        w = mask.to(tokens.dtype)[..., None]
        return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


@register("head", "last")
class LastHead(ClassifierHead):
    """Classify from the last real token (causal models). [B, L, D] -> [B, K]."""

    paper = "GPT (Radford et al. 2018)"

    def pool(self, tokens, mask):
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

    def __init__(self, dim: int, num_classes: int = 2, multi_label: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__(dim, num_classes, multi_label, dropout)
        self.query = nn.Parameter(torch.randn(dim) * dim ** -0.5)
        self.key = nn.Linear(dim, dim)

    def pool(self, tokens, mask):
        scores = self.key(tokens) @ self.query / tokens.shape[-1] ** 0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return (scores.softmax(-1)[..., None] * tokens).sum(1)


@register("head", "lm")
class LMHead(nn.Module):
    """Per-token logits for language modelling. [B, L, D] -> [B, L, V]; `tie` shares the
    weight with the token embedding (Press & Wolf 2017)."""

    paper = "Using the Output Embedding to Improve Language Models (Press & Wolf 2017)"
    problem = "lm"

    def __init__(self, dim: int, vocab_size: int = 256, tie: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.vocab_size, self.tie = vocab_size, tie
        self.fc = nn.Linear(dim, vocab_size, bias=bias)

    def forward(self, tokens, mask=None, hidden_states=None):
        return self.fc(tokens)


@register("head", "forecast")
class ForecastHead(nn.Module):
    """Forecast `horizon` steps of `channels` series. Flatten mode: all tokens [B, N, D] ->
    [B, H, C] by one linear map (DLinear/PatchTST-style); `per_token`: each token (a
    variate, iTransformer) -> its own H values, [B, N, D] -> [B, H, N]."""

    paper = "PatchTST (Nie et al. 2023) flatten head; iTransformer (Liu et al. 2024) projection"
    problem = "forecast"

    def __init__(self, dim: int, num_tokens: int, horizon: int = 96, channels: int = 1,
                 per_token: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if horizon < 1 or channels < 1:
            raise ConfigError(f"head 'forecast': horizon and channels must be >= 1 (got {horizon}, {channels})")
        self.horizon, self.channels, self.per_token = horizon, channels, per_token
        self.drop = nn.Dropout(dropout)
        if per_token:
            self.fc = nn.Linear(dim, horizon)
        else:
            self.fc = nn.Linear(num_tokens * dim, horizon * channels)

    def forward(self, tokens, mask=None, hidden_states=None):
        if self.per_token:
            return self.fc(self.drop(tokens)).transpose(1, 2)
        flat = tokens.flatten(1)
        if flat.shape[1] != self.fc.in_features:
            raise ShapeError(
                f"head 'forecast' was built for {self.fc.in_features // tokens.shape[-1]} tokens, got {tokens.shape[1]}; inputs must have the configured length"
            )
        out = self.fc(self.drop(flat))
        return out.view(tokens.shape[0], self.horizon, self.channels)
