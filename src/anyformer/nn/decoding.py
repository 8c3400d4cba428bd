"""Incremental decoding state: what a causal model keeps between generation steps.

While `decoding(model)` is active, every module declaring a `decode_state` attribute (the
model, its encoder and positions, mixers that decode incrementally) holds the same
`DecodeState`: `offset` is how many tokens the caches already hold, so a forward on the new
tokens alone places them after those; each mixer call takes the next cache slot in call
order, so a mixer shared by several layers (or run twice by `repeat`) keeps one cache per
layer it runs. Keys and values, or a recurrent state, live in those slots."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class DecodeState:
    """offset: tokens already cached; slots: one dict per mixer call, in call order;
    last_only: heads that declare `decode_state` return the last position's output alone
    (generation reads nothing else, and a long prompt's logits over a large vocabulary
    would dwarf the model)."""

    offset: int = 0
    last_only: bool = False
    slots: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0

    def slot(self) -> dict[str, Any]:
        """The cache of the next mixer call of this forward pass."""
        if self.calls == len(self.slots):
            self.slots.append({})
        slot = self.slots[self.calls]
        self.calls += 1
        return slot

    def advance(self, tokens: int) -> None:
        """After a forward over `tokens` new tokens: they are cached; the next pass starts
        from the first slot again."""
        self.offset += tokens
        self.calls = 0


def decoding_modules(model: nn.Module) -> list[nn.Module]:
    """The modules that read a decode state (each declares `decode_state`)."""
    return [m for m in model.modules() if hasattr(type(m), "decode_state")]


def cannot_decode(model: nn.Module) -> list[str]:
    """Names of the parts that cannot decode incrementally (those declaring
    `supports_decoding` False: mixers without a cache, transitions that pool the sequence),
    in order, each once; empty when the whole model can."""
    found = []
    for m in model.modules():
        if getattr(type(m), "supports_decoding", True) is False:
            kind = getattr(type(m), "registry_kind", "part")
            name = f"{kind} {getattr(m, 'registry_name', type(m).__name__)!r}"
            if name not in found:
                found.append(name)
    return found


@contextlib.contextmanager
def decoding(model: nn.Module, last_only: bool = False) -> Iterator[DecodeState]:
    """Hold one fresh DecodeState on every module that reads it, for the block's duration."""
    state = DecodeState(last_only=last_only)
    modules = decoding_modules(model)
    for m in modules:
        m.decode_state = state
    try:
        yield state
    finally:
        for m in modules:
            m.decode_state = None
