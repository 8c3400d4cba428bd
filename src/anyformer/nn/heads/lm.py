"""The language-model head: per-token logits over the vocabulary."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from anyformer.nn.decoding import DecodeState
from anyformer.nn.ranges import Count
from anyformer.registry import register


@register("head", "lm")
class LMHead(nn.Module):
    """Per-token logits for language modelling. [B, L, D] -> [B, L, V]; `tie` shares the
    weight with the token embedding (Press & Wolf 2017)."""

    paper = "Using the Output Embedding to Improve Language Models (Press & Wolf 2017)"
    # The head family: a task's problem strategy names the family whose heads fit it
    # (its `head_family`), so fitting a head to a task reads this declaration.
    problem: ClassVar[str] = "lm"
    # One output per position: a token filter may drop none (model.token_filter).
    accepts_token_subset: ClassVar[bool] = False
    # OT fusion (compress/fuse.py): each parameter -> the axis indexing the residual stream's
    # channels (None: independent of their order); permuting them there leaves the function unchanged.
    residual_axes: ClassVar[dict[str, int | None]] = {"fc.weight": 1, "fc.bias": None}
    # Set while generating (nn/decoding.py): with last_only, logits of the last position only.
    decode_state: DecodeState | None = None

    def __init__(self, dim: int, vocab_size: Count = 256, tie: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.vocab_size, self.tie = vocab_size, tie
        self.fc = nn.Linear(dim, vocab_size, bias=bias)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                hidden_states: list[torch.Tensor] | None = None) -> torch.Tensor:
        if self.decode_state is not None and self.decode_state.last_only:
            tokens = tokens[:, -1:]
        return self.fc(tokens)
