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
