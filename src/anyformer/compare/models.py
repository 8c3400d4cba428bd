"""Which variants a comparison trains: a preset, a preset with another token mixer
(`vit+linear`), a YAML file; by default the task's baseline and every efficient mixer
that builds for its data."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyformer import catalog, registry
from anyformer.config import apply_overrides, looks_like_path, read_yaml
from anyformer.errors import AnyformerError
from anyformer.presets import load_preset
from anyformer.tasks.base import Task
from anyformer.tasks.resolve import model_for_task


@dataclass
class ModelSpec:
    name: str
    model: dict[str, Any]


def parse_model_spec(text: str) -> ModelSpec:
    text = text.strip()
    if looks_like_path(text):
        data = read_yaml(text)
        return ModelSpec(Path(text).stem, copy.deepcopy(data.get("model", data)))
    preset, _, mixer = text.partition("+")
    model: dict[str, Any] = {"preset": preset}
    if mixer:
        registry.get("mixer", mixer)  # fail early, with a did-you-mean
        model["mixer"] = mixer
    load_preset(preset)  # fail early, with a did-you-mean
    return ModelSpec(text, model)


def model_dict(spec: ModelSpec, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The spec's model fields with the overrides every model shares (dim, depth, ...) merged
    in, as a run config holds them."""
    return apply_overrides(spec.model, overrides or {}, route=False)


def default_models(task: Task, overrides: dict[str, Any] | None = None) -> list[ModelSpec]:
    """The task's baseline preset, and the same model with every efficient mixer (one that
    declares itself `subquadratic`) that can be built for this task's data. Mixers that the
    baseline cannot carry (those that need every token pooled, no [CLS] token) run on the
    task's `pooled_baseline_preset` (`vit-gap` for images), which joins the set as a row of
    its own so the pooling change is measured too."""
    def builds(spec: ModelSpec) -> bool:
        try:
            catalog.create(model_for_task(model_dict(spec, overrides), task))
            return True
        except AnyformerError:
            return False

    base = task.baseline_preset()
    alt = task.pooled_baseline_preset
    specs = [ModelSpec(base, {"preset": base})]
    for name in registry.list_components("mixer"):
        if not registry.get("mixer", name).subquadratic:
            continue
        for preset in (base, alt):
            spec = ModelSpec(f"{preset}+{name}", {"preset": preset, "mixer": name}) if preset else None
            if spec is not None and builds(spec):
                if preset == alt and all(s.name != alt for s in specs):
                    specs.insert(1, ModelSpec(alt, {"preset": alt}))
                specs.append(spec)
                break
    return specs
