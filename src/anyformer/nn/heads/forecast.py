"""The forecasting head: tokens -> the next `horizon` steps of every series."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from anyformer.errors import ShapeError
from anyformer.nn.ranges import Count, Dropout
from anyformer.registry import register


@register("head", "forecast")
class ForecastHead(nn.Module):
    """Forecast `horizon` steps of `channels` series. Flatten mode: all tokens [B, N, D] ->
    [B, H, C] by one linear map (DLinear/PatchTST-style); `per_token`: each token (a
    variate, iTransformer) -> its own H values, [B, N, D] -> [B, H, N]."""

    paper = "PatchTST (Nie et al. 2023) flatten head; iTransformer (Liu et al. 2024) projection"
    # The head family: a task's problem strategy names the family whose heads fit it
    # (its `head_family`), so fitting a head to a task reads this declaration.
    problem: ClassVar[str] = "forecast"
    # It reads a fixed number of time steps: a token filter may drop none (model.token_filter).
    accepts_token_subset: ClassVar[bool] = False

    def __init__(self, dim: int, num_tokens: int, horizon: Count = 96, channels: Count = 1,
                 per_token: bool = False, dropout: Dropout = 0.0) -> None:
        super().__init__()
        self.horizon, self.channels, self.per_token = horizon, channels, per_token
        self.drop = nn.Dropout(dropout)
        if per_token:
            self.fc = nn.Linear(dim, horizon)
        else:
            self.fc = nn.Linear(num_tokens * dim, horizon * channels)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                hidden_states: list[torch.Tensor] | None = None) -> torch.Tensor:
        if self.per_token:
            return self.fc(self.drop(tokens)).transpose(1, 2)
        if mask is not None:  # padded steps hold whatever the layers left there: they must not count
            tokens = tokens * mask[..., None].to(tokens.dtype)
        flat = tokens.flatten(1)
        if flat.shape[1] != self.fc.in_features:
            raise ShapeError(
                f"head 'forecast' was built for {self.fc.in_features // tokens.shape[-1]} tokens, got {tokens.shape[1]}; inputs must have the configured length"
            )
        out = self.fc(self.drop(flat))
        return out.view(tokens.shape[0], self.horizon, self.channels)
