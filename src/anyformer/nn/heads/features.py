"""The feature head: the model's hidden states as its output (embeddings, feature extraction)."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import ConfigError
from anyformer.nn.heads.multilayer import pool_tokens
from anyformer.registry import register

FEATURE_POOLS = ("none", "first", "mean", "last", "pooler")


@register("head", "features")
class FeatureHead(nn.Module):
    """Hidden states as features, as transformers' BertModel / ViTModel return them
    (Devlin et al. 2019; mean-pooled sentence embeddings: Reimers & Gurevych 2019).
    tokens [B, L, D] -> [B, L, D] (`pool` 'none'), or one vector [B, D] per sample: the
    first token, the mean of the real tokens, the last real token, or 'pooler' (BERT's
    pooler: dense + tanh on the first token, BertModel's pooler_output). `pooler` holds
    the pooler's weights (an imported checkpoint keeps them even when `pool` does not read
    them); `normalize` scales each output vector to unit L2 norm (sentence-transformers'
    Normalize). Nothing here is trained for a task: `problem` 'features' fits no task."""

    paper = "BERT (Devlin et al. 2019) / Sentence-BERT (Reimers & Gurevych 2019)"
    # No task scores features: fitting a head to a task never picks this one.
    problem: ClassVar[str] = "features"
    # The generic suite builds it with its one learned part, so gradients have a parameter to reach.
    example_options: ClassVar[dict] = {"pool": "pooler", "pooler": True}

    def __init__(self, dim: int, pool: Literal[FEATURE_POOLS] = "none", pooler: bool = False,
                 normalize: bool = False) -> None:
        super().__init__()
        if pool == "pooler" and not pooler:
            raise ConfigError("head 'features': pool 'pooler' reads BERT's pooler; set pooler: true")
        self.pool, self.normalize = pool, normalize
        self.pooler = nn.Linear(dim, dim) if pooler else None

    @property
    def accepts_token_subset(self) -> bool:
        """A token filter may drop tokens from a pooled output (not from the last token's, nor per token)."""
        return self.pool not in ("none", "last")

    @property
    def reads_first_token(self) -> bool:
        return self.pool in ("first", "pooler")

    @property
    def per_token(self) -> bool:
        """True when the output keeps one vector per input position ([B, L, D])."""
        return self.pool == "none"

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                hidden_states: list[torch.Tensor] | None = None) -> torch.Tensor:
        if self.pool == "none":
            out = tokens
        elif self.pool == "pooler":
            out = torch.tanh(self.pooler(tokens[:, 0]))
        else:
            out = pool_tokens(tokens, mask, self.pool)
        return F.normalize(out, dim=-1) if self.normalize else out
