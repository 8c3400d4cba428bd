"""anyformer: build any Transformer variant from interchangeable parts, train it, and
measure what each design choice buys and costs.

    import anyformer as af
    model = af.create("vit", num_classes=10)
    mixer = af.build("mixer", "linear", dim=128, heads=4, max_len=512)
    af.list_components("mixer")
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from anyformer.config import ModelConfig, model_config
from anyformer.errors import AnyformerError, ConfigError, DataError, ShapeError, TrainingError
from anyformer.registry import build, list_components, register

__version__ = "0.1.0"


def create(source: str | Path | dict[str, Any] | ModelConfig = "vit", **overrides: Any) -> nn.Module:
    """Build a model from a preset name, a YAML path, a dict or a ModelConfig; keyword
    overrides set model fields (`depth=2`, `mixer="linear"`) or component options
    (`num_classes=10`, `vocab_size=256`, `image_size=8`)."""
    cfg = model_config(source, **overrides)
    return build("arch", cfg.arch.name, config=cfg, **cfg.arch.options)


def load(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A trained run directory -> (model with its trained weights, resolved config)."""
    from anyformer.train.loop import load_run

    return load_run(run_dir)


def list_presets() -> list[str]:
    from anyformer.presets import list_presets as _list

    return _list()


__all__ = [
    "AnyformerError", "ConfigError", "DataError", "ShapeError", "TrainingError", "ModelConfig",
    "build", "create", "list_components", "list_presets", "load", "model_config", "register",
]
