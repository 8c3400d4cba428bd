"""Named configs, one YAML file per published design. A file here is a preset: its name is
the file name, and it holds `description`, `paper` and a `model` mapping."""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from anyformer.errors import ConfigError, unknown

PRESET_DIR = Path(__file__).parent


@lru_cache(maxsize=None)
def _all() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict) or "model" not in data:
            raise ConfigError(f"preset file {path.name} has no 'model' mapping")
        out[path.stem] = data
    return out


def list_presets() -> list[str]:
    return sorted(_all())


def load_preset(name: str) -> dict[str, Any]:
    """The preset file's mapping (description, paper, model) as written; a copy, safe to
    modify. Its `model` may name a base preset (`preset: vit`); `config.preset_model`
    resolves the chain."""
    presets = _all()
    if name not in presets:
        raise unknown("preset", name, presets)
    return copy.deepcopy(presets[name])
