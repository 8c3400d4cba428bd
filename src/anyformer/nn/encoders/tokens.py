"""Token ids or raw bytes -> embeddings."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from anyformer.errors import ConfigError, ShapeError
from anyformer.nn.decoding import DecodeState
from anyformer.nn.encoders.base import Encoder, expect
from anyformer.nn.ranges import Count, Epsilon, InitStd, NonNegativeInt
from anyformer.registry import register


@register("encoder", "tokens")
class TokenEncoder(Encoder):
    """Embedding lookup for ids [B, L] (long) -> tokens [B, L(+1), D]; vocab_size 256 reads
    raw bytes. `pad_id` derives the mask when none is given; `cls_token` prepends a learned
    [CLS] token (BERT, Devlin et al. 2019).

    BERT's embedding block, as options (all off by default): `type_vocab_size` adds
    token-type (segment) embeddings, read from a dict input {"ids": [B, L], "token_types":
    [B, L]} (all type 0 when the input is ids alone); `position_embeddings` adds learned
    absolute positions here, before the norm (use it with model position 'none');
    `embed_norm` applies a LayerNorm (eps `norm_eps`; BERT uses 1e-12) to the sum, as
    BertEmbeddings does."""

    paper = "BERT (Devlin et al. 2019) / byte-level models"
    modality = "tokens"
    # OT fusion (compress/fuse.py): each parameter -> the axis indexing the residual stream's
    # channels (None: independent of their order); permuting them there leaves the function unchanged.
    residual_axes: ClassVar[dict[str, int | None]] = {"embedding.weight": 1, "cls": 2, "token_types.weight": 1,
                                                      "positions.weight": 1, "norm.weight": 0, "norm.bias": 0}
    # Set while generating (nn/decoding.py): new ids sit after the cached ones.
    decode_state: DecodeState | None = None

    def __init__(self, dim: int, max_len: int, vocab_size: Count = 256, pad_id: NonNegativeInt | None = None,
                 cls_token: bool = False, init_std: InitStd = 0.02, type_vocab_size: NonNegativeInt = 0,
                 position_embeddings: bool = False, embed_norm: bool = False, norm_eps: Epsilon = 1e-5) -> None:
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
        # Created only when asked for, so the state_dict keys of existing models stay as they were.
        self.token_types = nn.Embedding(type_vocab_size, dim) if type_vocab_size else None
        self.positions = nn.Embedding(self.num_tokens, dim) if position_embeddings else None
        for table in (self.token_types, self.positions):
            if table is not None:
                nn.init.normal_(table.weight, std=init_std)
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if embed_norm else None

    def head_hints(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size}

    def forward(self, ids: torch.Tensor | Mapping[str, torch.Tensor], mask: torch.Tensor | None = None):
        types = None
        if isinstance(ids, Mapping):
            ids, types = ids.get("ids"), ids.get("token_types")
        expect(ids, 2, "encoder 'tokens' input ids [batch, length]", floating=False)
        offset = self.decode_state.offset if self.decode_state is not None else 0
        if offset + ids.shape[1] > self.max_len:
            raise ConfigError(f"sequence length {offset + ids.shape[1]} exceeds max_len {self.max_len}; raise model.max_len")
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
        return self._embed_block(x, ids, types, offset), mask

    def _embed_block(self, x: torch.Tensor, ids: torch.Tensor, types: torch.Tensor | None, offset: int = 0) -> torch.Tensor:
        """BERT's sum of word, position and token-type embeddings, then its LayerNorm; the
        [CLS] token, when prepended, is position 0 and type 0."""
        if self.positions is not None:
            x = x + self.positions.weight[offset: offset + x.shape[1]].to(x.dtype)
        if self.token_types is not None:
            if types is None:
                x = x + self.token_types.weight[0].to(x.dtype)
            else:
                if types.shape != ids.shape or types.is_floating_point():
                    raise ShapeError(f"encoder 'tokens': token_types must be integer ids shaped like ids {list(ids.shape)}, got {types.dtype} {list(types.shape)}")
                if types.numel() and not torch.compiler.is_compiling() and (int(types.min()) < 0 or int(types.max()) >= self.token_types.num_embeddings):
                    raise ShapeError(f"encoder 'tokens': token type outside [0, {self.token_types.num_embeddings}); raise type_vocab_size")
                if self.cls is not None:
                    types = torch.cat([types.new_zeros(types.shape[0], 1), types], dim=1)
                x = x + self.token_types(types).to(x.dtype)
        return self.norm(x) if self.norm is not None else x

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return torch.randint(0, self.vocab_size, (batch, self.max_len))
