"""The memory guard a profile passes first: the model's estimated footprint on this input
(`anyformer.nn.footprint`: parameters still to move, gradients, activations) against the
memory free on the device, so a length or batch that cannot fit is refused with a one-line
ConfigError before anything is allocated, rather than failing in the allocator (or paging
the machine to a halt) halfway through the precision probe."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from anyformer.bench.inputs import LENGTH_MODALITIES
from anyformer.nn.step_memory import check_run


def input_size(model: nn.Module, example_input: Any) -> tuple[int, int | None]:
    """(samples, tokens the first layer sees) of an input, read from its shape without
    running the model; tokens is None (the encoder's own count) unless the encoder's
    token count follows the input's length."""
    first = example_input
    while isinstance(first, (tuple, list)) and first:
        first = first[0]
    if isinstance(first, dict) and first:
        first = next(iter(first.values()))
    if not isinstance(first, torch.Tensor) or first.dim() == 0:
        return 1, None
    encoder = getattr(model, "encoder", None)
    follows = getattr(encoder, "modality", "") in LENGTH_MODALITIES and first.dim() > 1
    tokens = int(first.shape[1]) + int(getattr(encoder, "num_prefix_tokens", 0)) if follows else None
    return int(first.shape[0]), tokens


def check_fits(model: nn.Module, example_input: Any, device: torch.device, train_step: bool) -> None:
    """ConfigError when a forward (and, with `train_step`, backward) pass of `model` on
    `example_input` is estimated to need more memory than `device` has free."""
    batch, tokens = input_size(model, example_input)
    shown = tokens or getattr(getattr(model, "encoder", None), "num_tokens", "?")
    check_run(model, batch, device, tokens=tokens, training=train_step,
              subject=f"batch {batch} x {shown} tokens", fix="lower --batch or --lengths")
