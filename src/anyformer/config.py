"""Typed, validated model configs, from a preset name, a YAML path or a dict, plus overrides.

Every field has a default, a type and a description; an unknown or invalid field is a
ConfigError naming its path, the valid choices and the closest one. Component specs are
`{name: ..., **options}` (or just the name) and their options are checked against the
component's own signature.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from anyformer import presets, registry
from anyformer.errors import ConfigError, suggest
from anyformer.token_filter_config import TokenFilterConfig


class ComponentSpec(BaseModel):
    """A registered component: its name plus its own options as further keys."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="registered name (see `anyformer list`)")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def check(self, kind: str, path: str, context: tuple[str, ...] = ()) -> None:
        """Validate the options against component `name` of `kind`; errors name each option
        by its path under `path` ('model.ffn.dropout must be ...'). Keys in `context` are
        model values set here for some layers (an override's mixer `heads`): the stack checks them."""
        try:
            registry.get(kind, self.name)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
        clean = registry.validate_options(kind, self.name, {k: v for k, v in self.options.items() if k not in context}, where=path)
        for k, v in clean.items():
            setattr(self, k, v)


class NormSpec(ComponentSpec):
    """A norm plus where it sits around each sublayer."""

    placement: Literal["pre", "post", "peri"] = Field(
        "pre", description="pre: x + f(norm(x)); post: norm(x + f(x)); peri: norm on the sublayer's input and output"
    )


class LayerOverride(BaseModel):
    """Per-layer replacements: `layers` selects layers by index list or Python slice ('0:2', '::2')."""

    model_config = ConfigDict(extra="forbid")
    layers: int | str | list[int] = Field(description="layer indices: an int, a list, or a slice string like '0:2'")
    mixer: ComponentSpec | None = Field(None, description="token mixer for these layers; may set their `heads` (pruned heads, with head_dim)")
    ffn: ComponentSpec | None = Field(None, description="channel mixer for these layers")

    def indices(self, depth: int) -> list[int]:
        sel = self.layers
        if isinstance(sel, int):
            idx = [sel]
        elif isinstance(sel, list):
            idx = list(sel)
        else:
            try:
                parts = [int(p) if p.strip() else None for p in sel.split(":")]
                idx = list(range(depth))[slice(*parts)] if ":" in sel else [int(sel)]
            except (ValueError, TypeError):
                raise ConfigError(f"model.schedule.overrides.layers: cannot read {sel!r}; use an index, a list or a slice like '0:2'") from None
        bad = [i for i in idx if not -depth <= i < depth]
        if bad:
            raise ConfigError(f"model.schedule.overrides.layers: {bad} outside 0..{depth - 1} (depth {depth})")
        return sorted({i % depth for i in idx})


class ScheduleConfig(BaseModel):
    """How the depth is laid out: per-layer overrides, weight sharing, dropped layers, and a
    transition module between consecutive layers (e.g. Informer's distilling)."""

    model_config = ConfigDict(extra="forbid")
    transition: ComponentSpec | None = Field(None, description="module applied between consecutive layers (see `anyformer list transition`)")
    overrides: list[LayerOverride] = Field(default_factory=list, description="per-layer mixer/ffn replacements")
    share: int | None = Field(None, ge=1, description="number of distinct blocks reused cyclically across depth (None: no sharing)")
    repeat: int = Field(1, ge=1, description="each distinct block runs this many times in a row (SReT-style recursion: layers 0,0,1,1,...); 1: no recursion")
    drop: list[int] = Field(default_factory=list, description="layer indices skipped in the forward pass (weights kept)")
    prune: list[str] = Field(default_factory=list, description="residual paths removed, as 'LAYER.mixer', 'LAYER.ffn' (or 'LAYER.ffn2', macaron's first ffn) (path pruning, Chang et al. 2023)")

    def pruned(self, depth: int, layout: str) -> dict[int, frozenset[str]]:
        """layer -> names of its pruned paths; a ConfigError names a bad entry and the valid form."""
        names = ("ffn2", "mixer", "ffn") if layout == "macaron" else ("mixer", "ffn")
        out: dict[int, set[str]] = {}
        for entry in self.prune:
            layer, _, name = str(entry).partition(".")
            if not layer.strip().isdigit() or not 0 <= int(layer) < depth or name not in names:
                raise ConfigError(
                    f"model.schedule.prune: {entry!r} is not a path; use 'LAYER.NAME' with LAYER in 0..{depth - 1} and NAME one of {', '.join(names)}"
                )
            out.setdefault(int(layer), set()).add(name)
        return {k: frozenset(v) for k, v in out.items()}


class ModelConfig(BaseModel):
    """The whole model: encoder -> layer schedule -> final norm -> head."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False, allow_inf_nan=False)
    preset: str | None = Field(None, description="preset this config started from (informational once resolved)")
    arch: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="stack"), description="model-level architecture (see `anyformer list arch`); 'stack' is encoder -> layers -> head")
    dim: int = Field(128, ge=1, description="width of every token")
    depth: int = Field(4, ge=1, description="number of layers")
    heads: int = Field(4, ge=1, description="attention heads (dim must be divisible by heads)")
    max_len: int = Field(256, ge=1, description="longest input sequence (tokens, time steps) the model accepts")
    causal: bool = Field(False, description="token t sees only tokens <= t (decoders, language models)")
    mixer: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="softmax"), description="token mixer")
    ffn: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="mlp"), description="channel mixer")
    norm: NormSpec = Field(default_factory=lambda: NormSpec(name="layernorm"), description="norm and its placement")
    layout: Literal["sequential", "parallel", "macaron"] = Field("sequential", description="how mixer and ffn are wired in a block")
    position: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="learned"), description="position information")
    encoder: ComponentSpec | None = Field(None, description="raw input -> tokens (a task fills it in when unset)")
    head: ComponentSpec | None = Field(None, description="tokens -> output (a task fills it in when unset)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on every residual branch and after the input")
    final_norm: bool = Field(True, description="normalise after the last layer (pre/peri placements need it)")
    drop_path: float = Field(0.0, ge=0.0, lt=1.0, description="stochastic depth: residual branches of layer i dropped per sample at rate drop_path * i / (depth - 1) (DeiT's linear rule)")
    path_scale: bool = Field(False, description="EnsembleScale: a learned scalar on every residual branch (Chang et al. 2023, path ensemble view)")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="per-layer overrides, sharing, dropping")
    token_filter: TokenFilterConfig | None = Field(None, description="learned token filter before the first layer (Wang et al. 2023); none: every token goes on")

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.dim % self.heads:
            divisors = [h for h in range(1, min(self.dim, 64) + 1) if self.dim % h == 0]
            raise ConfigError(f"model.dim {self.dim} is not divisible by model.heads {self.heads}; heads could be one of {divisors}")
        if self.schedule.transition is not None:
            self.schedule.transition.check("transition", "model.schedule.transition")
        for kind in ("arch", "mixer", "ffn", "norm", "position", "encoder", "head"):
            spec = getattr(self, kind)
            if spec is not None:
                spec.check(kind, f"model.{kind}")
        for i, ov in enumerate(self.schedule.overrides):
            ov.indices(self.depth)
            for kind in ("mixer", "ffn"):
                spec = getattr(ov, kind)
                if spec is not None:
                    spec.check(kind, f"model.schedule.overrides[{i}].{kind}", ("heads",) if kind == "mixer" else ())
        # schedule.drop is checked by the layer stack, against its own depth (FIT's stack has
        # depth x (local + global) layers).
        self.schedule.pruned(self.depth, self.layout)
        if self.schedule.repeat > 1 and self.schedule.share is not None:
            raise ConfigError("model.schedule: use either share (cyclic reuse) or repeat (in-place recursion), not both")
        if self.schedule.share is not None and self.schedule.share > self.depth:
            raise ConfigError(f"model.schedule.share {self.schedule.share} exceeds depth {self.depth}")
        if self.token_filter is not None:
            self.token_filter.check_model(self.causal, self.arch.name)
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


COMPONENT_FIELDS = {"arch": "arch", "mixer": "mixer", "ffn": "ffn", "norm": "norm", "position": "position",
                    "encoder": "encoder", "head": "head"}


# ---------------------------------------------------------------- loading and merging

def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping; a run directory (trained or imported) reads as its config.yaml."""
    path = Path(path) / "config.yaml" if Path(path).is_dir() else Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    return data


def looks_like_path(source: str) -> bool:
    return source.endswith((".yaml", ".yml")) or "/" in source


def merge_spec(base: Any, new: Any) -> Any:
    """A component override: a new name replaces the spec, the same name merges options."""
    if new is None:
        return None
    base_d = {"name": base} if isinstance(base, str) else copy.deepcopy(base)
    new_d = {"name": new} if isinstance(new, str) else dict(new)
    if base_d is None or ("name" in new_d and new_d["name"] != base_d.get("name")):
        return new_d
    base_d.update(new_d)
    return base_d


def merge_model(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in new.items():
        if key in COMPONENT_FIELDS and key in out:
            out[key] = merge_spec(out[key], value)
        elif key == "schedule" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def preset_model(name: str) -> dict[str, Any]:
    """A preset's model fields, its base presets (`preset: NAME` inside it) merged under it."""
    model = presets.load_preset(name)["model"]
    base = model.pop("preset", None)
    return merge_model(preset_model(base), model) if base else model


def source_dict(source: str | Path | dict[str, Any] | ModelConfig) -> dict[str, Any]:
    """The raw model dict of a preset name, YAML path or dict (a full run config's `model`)."""
    if isinstance(source, ModelConfig):
        return source.to_dict()
    if isinstance(source, Path) or (isinstance(source, str) and looks_like_path(source)):
        data = read_yaml(source)
        data = data.get("model", data) if "model" in data else data
    elif isinstance(source, str):
        data = {"preset": source}
    elif isinstance(source, dict):
        data = copy.deepcopy(source.get("model", source) if "model" in source else source)
    else:
        raise ConfigError(f"cannot read a model config from {type(source).__name__}; give a preset name, a YAML path or a dict")
    if not isinstance(data, dict):
        raise ConfigError(f"model config must be a mapping, got {type(data).__name__}")
    preset = data.get("preset")
    if preset:
        data = merge_model(preset_model(preset), {k: v for k, v in data.items() if k != "preset"})
        data["preset"] = preset
    return data


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`key=value` strings (value read as YAML) -> overrides, as given on the CLI by --set."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if isinstance(child, str):
            child = {"name": child}
        if child is None:
            child = {}
        node[part] = child
        node = child
    node[path[-1]] = value


def _component_class(kind: str, spec: Any) -> type | None:
    name = spec if isinstance(spec, str) else (spec or {}).get("name")
    if not name:
        return None
    try:
        return registry.get(kind, name)
    except ConfigError:
        return None


def _takers(data: dict[str, Any], key: str) -> list[str]:
    return [kind for kind in COMPONENT_FIELDS
            if (cls := _component_class(kind, data.get(kind))) is not None and key in registry.option_names(cls)]


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], route: bool = True) -> dict[str, Any]:
    """Model fields set directly; dotted keys set nested fields ('mixer.window'); any other
    key goes to every component (encoder, head, mixer, ...) that has an option of that name.
    With `route=False` such keys are kept as they are, to be routed once the components are
    known (a run's model is fitted to its task first)."""
    data = copy.deepcopy(data)
    fields = set(ModelConfig.model_fields)
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] == "model":
            parts = parts[1:]
        if not parts or not all(parts):
            raise ConfigError(f"--set {key}={value}: {key!r} names no model field; a preset is the model itself "
                              "(`anyformer show gpt`, `train --set model.preset=gpt`), a field is e.g. dim=64 or mixer.window=8")
        if parts[0] in fields:
            if len(parts) == 1 and parts[0] in COMPONENT_FIELDS:
                data[parts[0]] = merge_spec(data.get(parts[0]), value)
            elif len(parts) == 1:
                data[parts[0]] = value
            else:
                _set_path(data, parts, value)
            continue
        key = ".".join(parts)
        if not route:
            data[key] = value
            continue
        takers = _takers(data, key)
        if not takers:
            candidates = sorted(fields | {o for k in COMPONENT_FIELDS if (c := _component_class(k, data.get(k))) for o in registry.option_names(c)})
            raise ConfigError(
                f"unknown setting {key!r}{suggest(key, candidates)}: it is neither a model field nor an option of this model's components"
            )
        for kind in takers:
            spec = data[kind]
            spec = {"name": spec} if isinstance(spec, str) else dict(spec)
            spec[key] = value
            data[kind] = spec
    return data


def with_component_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A component given only options (`--set ffn.ratio=2` on a model whose ffn is the
    default) gets the default component's name, so the options apply to it."""
    out = dict(data)
    for kind in COMPONENT_FIELDS:
        spec = out.get(kind)
        if isinstance(spec, dict) and "name" not in spec:
            default = ModelConfig.model_fields[kind].get_default(call_default_factory=True)
            if default is not None:
                out[kind] = {"name": default.name, **spec}
    return out


_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"})


def _field_at(loc: tuple[Any, ...]) -> Any:
    """The FieldInfo a validation error's location points at (None inside lists or specs)."""
    target: Any = ModelConfig
    info = None
    for part in loc:
        fields = getattr(target, "model_fields", None)
        if not isinstance(part, str) or fields is None or part not in fields:
            return None
        info = fields[part]
        target = info.annotation
    return info


def _explain(err: pydantic.ValidationError) -> ConfigError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    path = f"model.{loc}" if loc else "model"
    if first["type"] == "extra_forbidden":
        parent_loc = first["loc"][:-1]
        field_name = str(first["loc"][-1])
        target = ModelConfig
        for part in parent_loc:
            ann = target.model_fields.get(str(part))
            inner = getattr(ann, "annotation", None)
            target = inner if isinstance(inner, type) and issubclass(inner, BaseModel) else target
        valid = sorted(target.model_fields)
        return ConfigError(f"{path}: unknown field{suggest(field_name, valid)}; valid: {', '.join(valid)}")
    ctx = first.get("ctx", {})
    field = _field_at(first["loc"])
    bounds = registry.value_range(field.metadata) if field is not None else ""
    if bounds and first["type"] in _RANGE_ERRORS:
        finite = "a finite number " if first["type"] == "finite_number" else ""
        return ConfigError(f"{path} must be {finite}{bounds}, got {first.get('input')!r}")
    if "expected" in ctx:
        return ConfigError(f"{path}: must be one of {ctx['expected']} (got {first.get('input')!r})")
    return ConfigError(f"{path}: {first['msg']} (got {first.get('input')!r})")


def model_config(source: str | Path | dict[str, Any] | ModelConfig = "vit", **overrides: Any) -> ModelConfig:
    """Resolve a preset name / YAML path / dict plus keyword overrides into a ModelConfig.
    Keys of the dict that are not model fields (options kept for routing by
    `apply_overrides(route=False)`) are routed like keyword overrides, which win."""
    data = source_dict(source)
    loose = {k: data.pop(k) for k in list(data) if k not in ModelConfig.model_fields}
    data = with_component_defaults(apply_overrides(data, {**loose, **overrides}))
    try:
        return ModelConfig.model_validate(data)
    except pydantic.ValidationError as err:
        # A ConfigError raised inside a validator arrives wrapped; surface it as it is.
        inner = err.errors()[0].get("ctx", {}).get("error")
        if isinstance(inner, ConfigError):
            raise inner from None
        raise _explain(err) from None
