"""Models and inputs of a chosen length, from a preset / YAML / config plus overrides, for
length sweeps of whole models (`anyformer bench`, `compare`)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from anyformer import runtime
from anyformer.catalog import create
from anyformer.config import model_config
from anyformer.errors import ConfigError
from anyformer.nn.footprint import human_bytes

# Encoders whose token count follows the input length (so a length sweep means something).
LENGTH_MODALITIES = ("tokens", "series")


def check_input(model: nn.Module, batch: int) -> None:
    """ConfigError when `batch` example inputs of the model's encoder would not fit in the
    memory free (they are made on the CPU), sized from one sample made on the meta device."""
    try:
        with torch.device("meta"):
            one = model.encoder.example_input(1)
    except Exception:  # noqa: BLE001 - an input the meta device cannot make goes unchecked
        return
    per_sample = sum(t.numel() * t.element_size() for t in tree_flatten(one)[0] if isinstance(t, torch.Tensor))
    free = runtime.available_memory("cpu")
    if batch * per_sample > free:
        raise ConfigError(f"--batch {batch}: the example inputs alone need ~{human_bytes(batch * per_sample)} "
                          f"({human_bytes(per_sample)} a sample), this machine has {human_bytes(free)} free; "
                          "lower --batch or --lengths")


def length_builder(source: str | Path | dict[str, Any], overrides: dict[str, Any],
                   lengths: Sequence[int], batch: int) -> Callable[[int], tuple[nn.Module, Any]]:
    """`build(L) -> (model, input of length L)`. One model is built with max_len = the
    longest length (so every length runs on the same weights); inputs are cut to each
    length. Encoders that need an exact input length (series 'patch' / 'variate') get a
    model per length. A max_len set explicitly below the longest length is a ConfigError."""
    if not lengths or min(lengths) < 1:
        raise ConfigError(f"--lengths must be positive integers, got {list(lengths)}")
    longest = max(lengths)
    if "max_len" in overrides and int(overrides["max_len"]) < longest:
        raise ConfigError(
            f"length {longest} exceeds max_len {overrides['max_len']} set by --set max_len; raise it or drop it (bench sets max_len to the longest length)"
        )
    cfg = model_config(source, **{**overrides, "max_len": longest})
    try:
        model = create(cfg)
    except ConfigError as err:
        # The user set --lengths, not max_len: say which of theirs sized the model.
        raise ConfigError(f"--lengths {longest} (bench builds the model with max_len {longest}): {err}") from None
    encoder = model.encoder
    modality = getattr(encoder, "modality", "")
    if modality not in LENGTH_MODALITIES:
        raise ConfigError(
            f"encoder {cfg.encoder.name!r} ({modality or 'fixed-size'} input) has no sequence length to sweep; drop --lengths"
        )
    exact = modality == "series" and getattr(encoder, "mode", "step") != "step"
    cache: dict[int, nn.Module] = {longest: model}

    def build(L: int) -> tuple[nn.Module, Any]:
        if L not in cache and exact:
            cache.clear()  # keep one model alive at a time
            cache[L] = create(model_config(source, **{**overrides, "max_len": L}))
        m = cache[L] if exact else model
        check_input(m, batch)
        x = m.encoder.example_input(batch)
        return m, (x if exact else x[:, :L].contiguous())

    return build


def example_model(source: str | Path | dict[str, Any], overrides: dict[str, Any], batch: int) -> tuple[nn.Module, torch.Tensor]:
    """The configured model and its encoder's example input of `batch` samples."""
    model = create(source, **overrides)
    check_input(model, batch)
    try:
        x = model.encoder.example_input(batch)
    except NotImplementedError as err:
        raise ConfigError(f"{err}; bench needs an encoder that can make an example input") from None
    return model, x
