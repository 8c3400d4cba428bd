"""Everything registered, and the builders that need the whole registry.

Importing this module imports the component packages (`nn`: mixers, ffns, norms,
positions, encoders, heads, transitions, archs; `tasks`) so that every `@register` line has
run; the registry itself imports nothing of anyformer. Above `nn` and `tasks`, below the
engine (`train`, `bench`, `report`, ...), which builds models and tasks through it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from anyformer import nn as components  # noqa: F401  (registers every model component)
from anyformer import registry, rundir, tasks  # noqa: F401  (tasks: registers every task)
from anyformer.config import ComponentSpec, ModelConfig, model_config
from anyformer.nn.quantization import apply_quantization
from anyformer.tasks.base import Task


def create(source: str | Path | dict[str, Any] | ModelConfig = "vit", **overrides: Any) -> nn.Module:
    """Build a model from a preset name, a YAML path, a dict or a ModelConfig; keyword
    overrides set model fields (`depth=2`, `mixer="linear"`) or component options
    (`num_classes=10`, `vocab_size=256`, `image_size=8`)."""
    cfg = model_config(source, **overrides)
    return registry.build("arch", cfg.arch.name, config=cfg, **cfg.arch.options)


def build_task(spec: ComponentSpec | dict[str, Any]) -> Task:
    """The task a spec names (its data is loaded on first use); a dict (a run config's
    `task:` section, {name, options...}) is validated first, as training validates it."""
    if isinstance(spec, dict):
        spec = ComponentSpec.model_validate(spec)
        spec.check("task", "task")
    return registry.build("task", spec.name, **spec.options)


def load_run(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A trained run directory -> (model with its weights in eval mode, resolved config)."""
    config = rundir.read_config(run_dir)
    rundir.recover(run_dir)
    model = create(config["model"])
    rundir.load_weights(model, Path(run_dir) / "model.safetensors")
    if config.get("quantization"):  # a quantized run stores float weights and its policy (nn.quantization)
        apply_quantization(model, config["quantization"])
    model.eval()
    return model, config
