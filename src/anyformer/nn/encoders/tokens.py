"""Token ids or raw bytes -> embeddings."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from anyformer.errors import ConfigError, ShapeError
from anyformer.nn.encoders.base import Encoder, expect
from anyformer.nn.ranges import Count, InitStd, NonNegativeInt
from anyformer.registry import register


@register("encoder", "tokens")
class TokenEncoder(Encoder):
    """Embedding lookup for ids [B, L] (long) -> tokens [B, L(+1), D]; vocab_size 256 reads
    raw bytes. `pad_id` derives the mask when none is given; `cls_token` prepends a learned
    [CLS] token (BERT, Devlin et al. 2019)."""

    paper = "BERT (Devlin et al. 2019) / byte-level models"
    modality = "tokens"

    def __init__(self, dim: int, max_len: int, vocab_size: Count = 256, pad_id: NonNegativeInt | None = None,
                 cls_token: bool = False, init_std: InitStd = 0.02) -> None:
        super().__init__()
        if pad_id is not None and not 0 <= pad_id < vocab_size:
            raise ConfigError(f"encoder 'tokens': pad_id {pad_id} outside the vocabulary [0, {vocab_size})")
        self.vocab_size, self.pad_id, self.max_len = vocab_size, pad_id, max_len
        self.embedding = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.embedding.weight, std=init_std)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * init_std) if cls_token else None
        self.num_prefix_tokens = int(cls_token)
        self.num_tokens = max_len + self.num_prefix_tokens
        self.may_pad = True

    def head_hints(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size}

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None):
        expect(ids, 2, "encoder 'tokens' input ids [batch, length]", floating=False)
        if ids.shape[1] > self.max_len:
            raise ConfigError(f"sequence length {ids.shape[1]} exceeds max_len {self.max_len}; raise model.max_len")
        # The range check reads values back to Python, a graph break under torch.compile:
        # compiled graphs skip it (an out-of-range id still fails inside the embedding).
        if ids.numel() and not torch.compiler.is_compiling() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ShapeError(
                f"token id {int(ids.max()) if int(ids.max()) >= self.vocab_size else int(ids.min())} outside the vocabulary [0, {self.vocab_size}); raise vocab_size"
            )
        if mask is None and self.pad_id is not None:
            mask = ids != self.pad_id
        x = self.embedding(ids)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            if mask is not None:
                mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        return x, mask

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return torch.randint(0, self.vocab_size, (batch, self.max_len))
