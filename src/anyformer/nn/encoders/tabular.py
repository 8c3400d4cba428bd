"""Tabular rows -> one token per feature (FT-Transformer)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from anyformer.errors import ConfigError, ShapeError
from anyformer.nn.encoders.base import Encoder, expect
from anyformer.nn.ranges import Count, NonNegativeInt
from anyformer.registry import register


@register("encoder", "tabular")
class TabularEncoder(Encoder):
    """Feature tokenizer (FT-Transformer, Gorishniy et al. 2021): numeric feature i ->
    x_i * w_i + b_i, categorical feature j -> embedding_j[c] + b_j, plus an optional [CLS].
    Input: numeric [B, n] float, or {"numeric": [B, n], "categorical": [B, m] long}
    -> tokens [B, n + m (+1), D]."""

    paper = "Revisiting Deep Learning Models for Tabular Data (Gorishniy et al. 2021)"
    modality = "tabular"
    example_options = {"num_numeric": 3, "categories": [4, 2]}

    def __init__(self, dim: int, num_numeric: NonNegativeInt = 0, categories: list[Count] | None = None,
                 cls_token: bool = True) -> None:
        super().__init__()
        categories = list(categories or [])
        if num_numeric < 0 or any(c < 1 for c in categories) or num_numeric + len(categories) == 0:
            raise ConfigError(
                "encoder 'tabular' needs num_numeric >= 0 and a cardinality >= 1 per categorical column, and at least one column"
            )
        self.num_numeric, self.categories = num_numeric, list(categories)
        self.num_weight = nn.Parameter(torch.randn(num_numeric, dim) * dim ** -0.5)
        self.num_bias = nn.Parameter(torch.zeros(num_numeric, dim))
        if categories:
            offsets = torch.tensor([0] + list(categories[:-1])).cumsum(0)
            self.register_buffer("offsets", offsets, persistent=False)
            self.cat_embedding = nn.Embedding(sum(categories), dim)
            nn.init.normal_(self.cat_embedding.weight, std=dim ** -0.5)
            self.cat_bias = nn.Parameter(torch.zeros(len(categories), dim))
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if cls_token else None
        self.num_prefix_tokens = int(cls_token)
        self.num_tokens = num_numeric + len(categories) + self.num_prefix_tokens

    def forward(self, x: Any, mask: torch.Tensor | None = None):
        numeric, categorical = (x.get("numeric"), x.get("categorical")) if isinstance(x, dict) else (x, None)
        parts = []
        if self.num_numeric:
            if numeric is None:
                raise ShapeError(f"encoder 'tabular' expects {self.num_numeric} numeric columns, got none")
            expect(numeric, 2, "encoder 'tabular' numeric columns [batch, features]", floating=True)
            if numeric.shape[1] != self.num_numeric:
                raise ShapeError(f"encoder 'tabular' expects {self.num_numeric} numeric columns, got {numeric.shape[1]}")
            parts.append(numeric[..., None] * self.num_weight + self.num_bias)
        if self.categories:
            if categorical is None:
                raise ShapeError(f"encoder 'tabular' expects {len(self.categories)} categorical columns, got none")
            expect(categorical, 2, "encoder 'tabular' categorical columns [batch, features]", floating=False)
            if categorical.shape[1] != len(self.categories):
                raise ShapeError(f"encoder 'tabular' expects {len(self.categories)} categorical columns, got {categorical.shape[1]}")
            limit = torch.tensor(self.categories, device=categorical.device)
            # Reading the check back to Python is a graph break when compiled and cannot be
            # exported: traced graphs skip it (the code that feeds them validates the rows).
            if not torch.compiler.is_compiling() and bool(((categorical < 0) | (categorical >= limit)).any()):
                raise ShapeError("encoder 'tabular': a categorical code is outside its column's cardinality")
            parts.append(self.cat_embedding(categorical + self.offsets) + self.cat_bias)
        tokens = torch.cat(parts, dim=1)
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        return tokens, None

    def example_input(self, batch: int = 2) -> Any:
        out: dict[str, torch.Tensor] = {}
        if self.num_numeric:
            out["numeric"] = torch.randn(batch, self.num_numeric)
        if self.categories:
            out["categorical"] = torch.stack([torch.randint(0, c, (batch,)) for c in self.categories], 1)
        return out if self.categories else out["numeric"]
