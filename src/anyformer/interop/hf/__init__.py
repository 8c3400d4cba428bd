"""Hugging Face checkpoints <-> anyformer models, one module per transformers family.

Each family module (bert, vit, gpt2, llama) declares:

    MODEL_TYPES: tuple[str, ...]     transformers `model_type` values it reads ("bert", ...)
    def model_config(hf: dict) -> dict
        config.json -> an anyformer model config dict; a field it cannot honour (an
        activation, a rope scaling type) is a ConfigError naming the field and its value.
        On import `hf` also holds "_state_keys": the checkpoint's tensor names (a config
        may depend on which weights are present, e.g. BERT's optional pooler).
    def import_state(hf_state: dict[str, Tensor], hf: dict) -> dict[str, Tensor]
        the checkpoint's tensors -> the anyformer model's state_dict (exact copies or
        transposes, never a lossy transform).
    def exports(config: ModelConfig) -> str | None
        None when this family can write `config`, else why not (the component with no
        equivalent), used to pick the family on export and to explain a refusal.
    def export_config(config: ModelConfig) -> dict
        an anyformer model config -> config.json (model_type, architectures, sizes).
    def export_state(state: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]
        the anyformer state_dict -> the checkpoint's tensors; import_state's inverse.

Optional:

    def export_notes(config: ModelConfig) -> list[str]
        what the written checkpoint leaves out or changes (a head with no transformers
        equivalent, an input id to prepend), printed by `anyformer export`.

Checkpoint tensors the import does not carry over (a pretraining head) are found by the
core (convert.py) as the keys export_state(import_state(...)) does not give back, and
reported. Family modules are imported lazily, by name: a family whose module is missing
is skipped, so the others work while it is written.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from anyformer.errors import unknown

FAMILY_MODULES = ("bert", "vit", "gpt2", "llama")


def family_modules() -> dict[str, ModuleType]:
    """name -> module of every family that is importable."""
    found: dict[str, ModuleType] = {}
    for name in FAMILY_MODULES:
        qualified = f"{__name__}.{name}"
        try:
            found[name] = importlib.import_module(qualified)
        except ModuleNotFoundError as err:
            if err.name != qualified:  # a dependency of an existing family module: a real error
                raise
    return found


def family_for(model_type: str) -> ModuleType:
    """The family module reading transformers `model_type`; a did-you-mean ConfigError when none does."""
    families = family_modules()
    for module in families.values():
        if model_type in module.MODEL_TYPES:
            return module
    readable = [t for module in families.values() for t in module.MODEL_TYPES]
    raise unknown("Hugging Face model_type (config.json)", model_type, readable)
