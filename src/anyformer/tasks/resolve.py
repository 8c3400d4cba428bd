"""Fit a model config to a task: precedence preset < task defaults < the user's own fields,
then the data's facts (image size, classes, vocabulary) are forced."""
from __future__ import annotations

import copy
from typing import Any

from anyformer import registry
from anyformer.config import ModelConfig, looks_like_path, merge_model, model_config, preset_model, read_yaml
from anyformer.errors import ConfigError
from anyformer.tasks.base import Task


def _name(spec: Any) -> str | None:
    return spec if isinstance(spec, str) else (spec or {}).get("name")


def _spec(spec: Any) -> dict[str, Any]:
    return {"name": spec} if isinstance(spec, str) else dict(spec or {})


def _fits(kind: str, spec: Any, task: Task) -> bool:
    name = _name(spec)
    if not name:
        return False
    cls = registry.get(kind, name)
    if kind == "encoder":
        return getattr(cls, "modality", None) == task.modality
    # A head declares its family as `problem`; the task's strategy names the family it needs.
    return getattr(cls, "problem", None) == task.strategy.head_family


def raw_model_dict(source: str | dict[str, Any] | ModelConfig | None) -> dict[str, Any]:
    """The user's own model fields (preset named, not yet expanded)."""
    if source is None:
        return {}
    if isinstance(source, ModelConfig):
        return source.to_dict()
    if isinstance(source, str):
        if looks_like_path(source):
            data = read_yaml(source)
            return copy.deepcopy(data.get("model", data))
        return {"preset": source}
    return copy.deepcopy(source.get("model", source) if "model" in source else source)


def model_for_task(source: str | dict[str, Any] | ModelConfig | None, task: Task,
                   **overrides: Any) -> ModelConfig:
    """A validated ModelConfig for `task` from a preset / YAML / dict and overrides. The
    dict may hold options that are no model field (`num_classes`, from `--set`): they go to
    whichever fitted component takes them."""
    user = raw_model_dict(source)
    preset = user.pop("preset", None)
    base = preset_model(preset) if preset else {}
    defaults = task.model_defaults()
    fitted = copy.deepcopy(base)
    for kind in ("encoder", "head"):
        if kind in user and _name(user[kind]) and not _fits(kind, user[kind], task):
            raise ConfigError(
                f"model.{kind} {_name(user[kind])!r} does not fit task {task.name!r} "
                f"({'inputs are ' + task.modality if kind == 'encoder' else 'problem is ' + task.problem}); leave it unset to use {_name(defaults[kind])!r}"
            )
        if kind not in fitted or not _fits(kind, fitted[kind], task):
            fitted[kind] = copy.deepcopy(defaults[kind])
        elif _name(fitted[kind]) == _name(defaults[kind]):
            # Same component as the task's default: the task's tuned options beat the preset's.
            fitted[kind] = {**({"name": fitted[kind]} if isinstance(fitted[kind], str) else fitted[kind]), **defaults[kind]}
    for key, value in defaults.items():
        if key not in ("encoder", "head"):
            fitted[key] = value
    causal = overrides.get("causal", overrides.get("model.causal", user.get("causal", fitted.get("causal"))))
    # A fitted 'cls' head is a classifier head, so the problem needs no check of its own.
    if causal and _name(fitted.get("head")) == "cls":
        # A causal model's first token sees nothing else, so a [CLS] head at token 0 gives the
        # same output for every input: classify from the last token instead.
        if _name(user.get("head")) == "cls":
            raise ConfigError("model.head 'cls' reads the first token, which sees no other token in a causal model; "
                              "use head 'last' (or 'mean') or set causal=false")
        fitted["head"] = {**_spec(fitted["head"]), "name": "last"}
        enc = _spec(fitted.get("encoder"))
        if enc and "cls_token" in registry.option_names(registry.get("encoder", enc["name"])):
            fitted["encoder"] = {**enc, "cls_token": False}
    merged = merge_model(fitted, user)
    for kind, facts in task.required_options().items():
        spec = merged.get(kind)
        if spec is None:
            continue
        spec = {"name": spec} if isinstance(spec, str) else dict(spec)
        accepted = registry.option_names(registry.get(kind, spec["name"]))
        spec.update({k: v for k, v in facts.items() if k in accepted})
        merged[kind] = spec
    if preset:
        merged["preset"] = preset
    return model_config(merged, **overrides)


def _same(a: Any, b: Any) -> bool:
    # An image size may be written 8 or [8, 8].
    pair = lambda v: [v, v] if isinstance(v, int) else list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    return a == b or pair(a) == pair(b)


def check_fits(model: dict[str, Any], task: Task) -> None:
    """A ConfigError when an already built model (its resolved config dict) cannot run on
    `task`: an encoder of another input kind, a head of another problem, or an option the
    data fixes (classes, vocabulary, image size) set otherwise. For evaluating a run on a
    task it was not trained on (an imported model)."""
    for kind in ("encoder", "head"):
        spec = _spec(model.get(kind))
        if spec.get("name") and not _fits(kind, spec, task):
            what = "inputs are " + task.modality if kind == "encoder" else "problem is " + task.problem
            raise ConfigError(f"the model's {kind} {spec['name']!r} does not fit task {task.name!r} ({what}); "
                              "train a model for it instead (`anyformer train --set task=...`)")
    for kind, facts in task.required_options().items():
        spec = _spec(model.get(kind))
        for key, value in facts.items():
            if key in spec and not _same(spec[key], value):
                raise ConfigError(f"the model's {kind} {key}={spec[key]!r} does not fit task {task.name!r}, whose data needs {value!r}")
