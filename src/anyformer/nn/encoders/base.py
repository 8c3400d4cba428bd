"""The encoder contract: raw batch -> (tokens [B, L, D], mask Bool[B, L] | None)."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from anyformer.errors import ShapeError


class Encoder(nn.Module):
    """Base of every encoder. Subclasses set `num_tokens` (most tokens they emit) and
    `grid` ((H, W) of image tokens, else None), and may give the head defaults it needs
    (`head_hints`) and undo their own transforms on the head's output (`postprocess`)."""

    paper: ClassVar[str] = ""
    # The input family this encoder reads: 'tokens', 'images', 'series' or 'tabular'.
    modality: ClassVar[str] = ""
    num_tokens: int
    grid: tuple[int, int] | None = None
    num_prefix_tokens: int = 0
    may_pad: bool = False

    def head_hints(self) -> dict[str, Any]:
        return {}

    def postprocess(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def example_input(self, batch: int = 2) -> Any:
        """A valid random input, for tests and profiling."""
        raise NotImplementedError(f"encoder {type(self).__name__} gives no example input")


def expect(x: torch.Tensor, rank: int, what: str, floating: bool | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{what}: expected a tensor, got {type(x).__name__}")
    if x.dim() != rank:
        raise ShapeError(f"{what}: expected rank {rank}, got shape {list(x.shape)}")
    if floating is True and not x.is_floating_point():
        raise ShapeError(f"{what}: expected a floating-point tensor, got {x.dtype}")
    if floating is False and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise ShapeError(f"{what}: expected integer ids (torch.long), got {x.dtype}")
