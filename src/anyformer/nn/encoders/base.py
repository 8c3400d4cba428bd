"""The encoder contract: raw batch -> (tokens [B, L, D], mask Bool[B, L] | None), with
B >= 1 and L >= 1. An empty batch or an input of 0 tokens is a ShapeError raised here, for
every encoder and so for every model, before any layer sees it (a view or reshape of 0
elements would fail deep inside with a raw torch error)."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from anyformer.errors import ShapeError


def _name(encoder: nn.Module) -> str:
    return getattr(encoder, "registry_name", type(encoder).__name__)


def _batch_sizes(value: Any) -> list[int]:
    """Leading sizes of the tensors a raw batch holds (a tensor, or a dict of them)."""
    if isinstance(value, torch.Tensor):
        return [value.shape[0]] if value.dim() else []
    if isinstance(value, dict):
        return [n for v in value.values() for n in _batch_sizes(v)]
    return []


def refuse_empty_batch(encoder: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook of every encoder: a batch of 0 samples is a ShapeError."""
    if args and 0 in _batch_sizes(args[0]):
        raise ShapeError(f"encoder {_name(encoder)!r} got a batch of 0 samples; pass at least one sample")


def refuse_empty_tokens(encoder: nn.Module, args: tuple[Any, ...], output: Any) -> None:
    """Forward hook of every encoder: tokens [B, L, D] with no token but the encoder's own
    prefix ([CLS]) are a ShapeError."""
    tokens = output[0] if isinstance(output, tuple) else output
    prefix = getattr(encoder, "num_prefix_tokens", 0)
    if isinstance(tokens, torch.Tensor) and tokens.dim() == 3 and tokens.shape[1] <= prefix:
        raise ShapeError(f"encoder {_name(encoder)!r} got an input of 0 tokens; pass at least one token (time step, feature) per sample")


class Encoder(nn.Module):
    """Base of every encoder. Subclasses set `num_tokens` (most tokens they emit) and
    `grid` ((H, W) of image tokens, else None), and may give the head defaults it needs
    (`head_hints`) and undo their own transforms on the head's output (`postprocess`).
    Empty batches and inputs of 0 tokens are refused by hooks registered here, so no
    subclass (and no arch) has to remember the check."""

    paper: ClassVar[str] = ""
    # The input family this encoder reads: 'tokens', 'images', 'series' or 'tabular'.
    modality: ClassVar[str] = ""
    num_tokens: int
    grid: tuple[int, int] | None = None
    num_prefix_tokens: int = 0
    may_pad: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.register_forward_pre_hook(refuse_empty_batch)
        self.register_forward_hook(refuse_empty_tokens)

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
