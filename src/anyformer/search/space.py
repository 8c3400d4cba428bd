"""The search space: a YAML file over anything a run config can say, read into a tree of
fixed values and distributions that a trial samples define-by-run (Optuna's `suggest_*`),
so a component's own options are parameters only when that component is chosen.

    model:
      preset: vit                               # a fixed value
      dim: {choice: [32, 64, 96]}               # categorical
      depth: {int: [1, 4]}                      # integers lo..hi (step, log)
      mixer:                                    # a component per layer group
        groups: 2                               # or per_layer: true
        choice: {softmax: {}, local: {window: {choice: [4, 8]}}, linear: {}}
      ffn: {choice: {mlp: {ratio: {choice: [2, 4]}}, glu: {}}}
      norm: {choice: {layernorm: {placement: {choice: [pre, post]}}, rmsnorm: {}}}
    train:
      lr: {float: [3.0e-4, 3.0e-3], log: true}  # reals lo..hi
    quantization: {choice: [fp32, int8-dynamic]}  # or {default: ..., layers: {PATTERN: ...}}

Every path, component, option and value is checked when the file is read: each value a
distribution can take is validated against the config it lands in, one parameter varied at
a time from a representative point (every distribution at its first value); an error names
the field by its path in the space. Combinations that cannot be built (heads that do not
divide a width) are found when a trial builds them and mark that trial infeasible."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from anyformer import registry
from anyformer.config import ModelConfig, model_config, read_yaml
from anyformer.errors import AnyformerError, ConfigError, suggest
from anyformer.nn.quantization import SCHEMES, check_policy
from anyformer.train.config import TrainConfig

KINDS = ("choice", "int", "float")
SECTIONS = ("model", "train", "quantization")
# Component fields a choice may pick among with each its own options; mixer and ffn also
# per layer group (schedule overrides).
COMPONENTS = ("mixer", "ffn", "norm", "position", "encoder", "head", "arch")
PER_LAYER = ("mixer", "ffn")
NO_QUANTIZATION = "fp32"


@dataclass
class Dist:
    """One parameter: categorical over `values`, or int / float in [low, high]."""

    path: str
    kind: str
    values: list[Any] = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    def sample(self, trial, name: str) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(name, self.values)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def points(self) -> list[Any]:
        """The values checked when the space is read: every choice, both ends of a range."""
        if self.kind == "choice":
            return list(self.values)
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]


@dataclass
class Components:
    """A component field that chooses among registered components, each with the space of
    its own options; `groups` > 0 splits the depth into that many contiguous groups of
    layers, each choosing on its own (`per_layer`: one group per layer)."""

    path: str
    alternatives: dict[str, dict[str, Any]]
    groups: int = 0
    per_layer: bool = False


def _parse(node: Any, path: str) -> Any:
    """A YAML value -> fixed value, Dist, Components or a mapping of those."""
    if not isinstance(node, dict):
        return node
    kinds = [k for k in KINDS if k in node]
    component = path.split(".")[-1] in COMPONENTS and path.count(".") == 1 and path.startswith("model.")
    if not kinds:
        if any(k in node for k in ("groups", "per_layer")):
            raise ConfigError(f"space {path}: groups / per_layer need a choice of components, e.g. "
                              f"{{groups: 2, choice: {{softmax: {{}}, linear: {{}}}}}}")
        return {k: _parse(v, f"{path}.{k}") for k, v in node.items()}
    if len(kinds) > 1:
        raise ConfigError(f"space {path}: give one of {', '.join(KINDS)}, not {' and '.join(kinds)}")
    kind = kinds[0]
    if kind == "choice" and isinstance(node["choice"], dict):
        if not component:
            raise ConfigError(f"space {path}: a choice given as a mapping picks components with their options; only "
                              f"model.{{{', '.join(COMPONENTS)}}} are components; give a list of values instead")
        return _components(node, path)
    allowed = {"choice": {"choice"}, "int": {"int", "step", "log"}, "float": {"float", "step", "log"}}[kind]
    stray = sorted(set(node) - allowed - ({"groups", "per_layer"} if component else set()))
    if stray:
        raise ConfigError(f"space {path}: unknown key {stray[0]!r}{suggest(stray[0], sorted(allowed))}; "
                          f"a {kind} takes {', '.join(sorted(allowed))}")
    if kind == "choice":
        values = node["choice"]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"space {path}.choice: expected a non-empty list of values, got {values!r}")
        bad = [v for v in values if not isinstance(v, (str, int, float, bool)) and v is not None]
        if bad:
            raise ConfigError(f"space {path}.choice: values must be numbers, strings, booleans or null (Optuna's "
                              f"categorical); got {bad[0]!r}")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"space {path}.choice: a value is listed twice in {values!r}")
        if component and (node.get("groups") or node.get("per_layer")):
            return _components({**node, "choice": {str(v): {} for v in values}}, path)
        return Dist(path, "choice", values=list(values))
    bounds = node[kind]
    number = (int,) if kind == "int" else (int, float)
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)):
        raise ConfigError(f"space {path}.{kind}: expected [low, high] ({'integers' if kind == 'int' else 'numbers'}), "
                          f"got {bounds!r}")
    low, high = bounds
    log = node.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"space {path}.log: expected true or false, got {log!r}")
    if low > high:
        raise ConfigError(f"space {path}.{kind}: low {low} is above high {high}")
    if log and low <= 0:
        raise ConfigError(f"space {path}: a log range needs low > 0, got {low}")
    step = node.get("step")
    if step is not None and (not isinstance(step, number) or isinstance(step, bool) or step <= 0):
        raise ConfigError(f"space {path}.step: expected a positive {'integer' if kind == 'int' else 'number'}, got {step!r}")
    if step is not None and log:
        raise ConfigError(f"space {path}: step and log cannot be combined (Optuna samples one or the other)")
    if component:
        raise ConfigError(f"space {path}: a component is chosen by name, e.g. {{choice: [softmax, linear]}}")
    return Dist(path, kind, low=float(low), high=float(high), step=None if step is None else float(step), log=log)


def _components(node: dict[str, Any], path: str) -> Components:
    field_name = path.split(".")[-1]
    stray = sorted(set(node) - {"choice", "groups", "per_layer"})
    if stray:
        raise ConfigError(f"space {path}: unknown key {stray[0]!r}; a component choice takes choice, groups, per_layer")
    groups, per_layer = node.get("groups", 0), node.get("per_layer", False)
    if not isinstance(per_layer, bool):
        raise ConfigError(f"space {path}.per_layer: expected true or false, got {per_layer!r}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 0:
        raise ConfigError(f"space {path}.groups: expected a positive integer, got {groups!r}")
    if (groups or per_layer) and field_name not in PER_LAYER:
        raise ConfigError(f"space {path}: only {' and '.join(PER_LAYER)} may vary per layer group")
    if groups and per_layer:
        raise ConfigError(f"space {path}: give groups or per_layer, not both")
    choice = node["choice"]
    if not choice:
        raise ConfigError(f"space {path}.choice: name at least one component")
    alternatives = {}
    for name, options in choice.items():
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise ConfigError(f"space {path}.choice.{name}: expected a mapping of its options (or {{}}), got {options!r}")
        if "name" in options:
            raise ConfigError(f"space {path}.choice.{name}: the key names the component; drop its 'name' option")
        alternatives[str(name)] = {k: _parse(v, f"{path}.choice.{name}.{k}") for k, v in options.items()}
        if any(isinstance(v, (Components, dict)) and not _fixed(v) for v in alternatives[str(name)].values()):
            raise ConfigError(f"space {path}.choice.{name}: an option's space must be a value or a distribution")
    return Components(path, alternatives, groups, per_layer)


def _fixed(node: Any) -> bool:
    if isinstance(node, (Dist, Components)):
        return False
    if isinstance(node, dict):
        return all(_fixed(v) for v in node.values())
    return True


@dataclass
class Space:
    """A parsed space: its sections as trees, and where it came from (for messages)."""

    tree: dict[str, Any]
    source: str = "space"
    raw: dict[str, Any] = field(default_factory=dict)  # the file as read, kept in search.json

    def sample(self, trial) -> dict[str, Any]:
        """A trial's candidate, {model, train, quantization}, its parameters suggested on
        `trial` (any object with Optuna's suggest_categorical / suggest_int / suggest_float)."""
        return realize(self.tree, lambda dist, name: dist.sample(trial, name))

    def representative(self) -> dict[str, Any]:
        """Every distribution at its first value, every component choice at its first."""
        return realize(self.tree, lambda dist, name: dist.points()[0])

    def dists(self) -> list[tuple[str, Dist]]:
        """Every (parameter path, distribution) the space can sample, conditional ones included."""
        found: list[tuple[str, Dist]] = []
        _walk(self.tree, found)
        return found

    def has_quantization(self) -> bool:
        """Whether some candidate quantizes a layer (latencies are then all timed compiled)."""
        q = self.tree.get("quantization")
        return q is not None and any(v != NO_QUANTIZATION for v in _leaf_values(q))



def _leaf_values(node: Any) -> list[Any]:
    if isinstance(node, Dist):
        return node.points()
    if isinstance(node, dict):
        return [v for child in node.values() for v in _leaf_values(child)]
    return [node]


def _walk(node: Any, found: list[tuple[str, Dist]]) -> None:
    if isinstance(node, Dist):
        found.append((node.path, node))
    elif isinstance(node, Components):
        for options in node.alternatives.values():
            for child in options.values():
                _walk(child, found)
    elif isinstance(node, dict):
        for child in node.values():
            _walk(child, found)


def _value(node: Any, pick, name: str) -> Any:
    if isinstance(node, Dist):
        return pick(node, name)
    if isinstance(node, dict):
        return {k: _value(v, pick, f"{name}.{k}") for k, v in node.items()}
    return copy.deepcopy(node)


def _component(node: Components, pick, name: str) -> dict[str, Any]:
    chosen = pick(Dist(node.path, "choice", values=list(node.alternatives)), name)
    options = {k: _value(v, pick, f"{name}.{chosen}.{k}") for k, v in node.alternatives[chosen].items()}
    return {"name": chosen, **options}


def _groups(depth: int, node: Components) -> list[tuple[int, int]]:
    """The layer ranges [start, stop) each group covers; a depth below the group count gives
    one group per layer."""
    count = depth if node.per_layer else min(node.groups, depth)
    return [(g * depth // count, (g + 1) * depth // count) for g in range(count)]


def realize(tree: dict[str, Any], pick) -> dict[str, Any]:
    """The candidate a tree gives when each distribution takes `pick(dist, name)`: fields in
    file order, so a per-layer choice comes after the depth it depends on."""
    model: dict[str, Any] = {}
    grouped: list[tuple[str, Components]] = []
    for key, node in (tree.get("model") or {}).items():
        if isinstance(node, Components) and (node.groups or node.per_layer):
            grouped.append((key, node))
        elif isinstance(node, Components):
            model[key] = _component(node, pick, f"model.{key}")
        else:
            model[key] = _value(node, pick, f"model.{key}")
    if grouped:
        depth = model.get("depth")
        if depth is None:
            preset = model.get("preset")
            depth = model_config(preset).depth if preset else ModelConfig.model_fields["depth"].default
        overrides = list((model.get("schedule") or {}).get("overrides") or [])
        for key, node in grouped:
            for g, (start, stop) in enumerate(_groups(int(depth), node)):
                spec = _component(node, pick, f"model.{key}@{g}")
                if g == 0:  # the model's own field: the other groups override it on their layers
                    model[key] = spec
                else:
                    overrides.append({"layers": f"{start}:{stop}", key: spec})
        if overrides:
            model["schedule"] = {**(model.get("schedule") or {}), "overrides": overrides}
    train = _value(tree.get("train") or {}, pick, "train")
    return {"model": model, "train": train, "quantization": _policy(tree.get("quantization"), pick)}


def _policy(node: Any, pick) -> dict[str, Any] | None:
    """The sampled quantization policy, None when it quantizes nothing."""
    if node is None:
        return None
    value = _value(node, pick, "quantization")
    policy = {"default": value} if not isinstance(value, dict) else value
    quantizes = policy.get("default", NO_QUANTIZATION) != NO_QUANTIZATION or any(
        s != NO_QUANTIZATION for s in (policy.get("layers") or {}).values())
    return policy if quantizes else None


def read_space(source: str | Path | dict[str, Any]) -> Space:
    """A space from a YAML file or a dict, every field checked (see the module docstring)."""
    label = "space"
    if isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        label = str(source)
        if not Path(source).expanduser().is_file():
            raise ConfigError(f"--space {source}: no such file; write a YAML space (see `anyformer search --help`)")
        try:
            raw = read_yaml(Path(source).expanduser())
        except ConfigError as err:
            raise ConfigError(f"--space: {err}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{label}: expected a mapping with sections {', '.join(SECTIONS)}, got {raw!r}")
    stray = [k for k in raw if k not in SECTIONS]
    if stray:
        raise ConfigError(f"{label}: unknown section {stray[0]!r}{suggest(stray[0], SECTIONS)}; valid: {', '.join(SECTIONS)} "
                          "(the task comes from --task)")
    for key in ("model", "train"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(f"{label}: {key}: expected a mapping of fields, got {raw[key]!r}")
    try:
        tree = {key: _parse(raw[key], key) for key in raw}
        space = Space(tree, label, raw)
        _check(space)
    except ConfigError as err:
        text = str(err)
        raise ConfigError(text if text.startswith(label) else f"{label}: {text}") from None
    return space


def _check_model_fields(model: dict[str, Any]) -> None:
    fields = list(ModelConfig.model_fields)
    for key in model:
        if key not in fields:
            raise ConfigError(f"model.{key}: not a model field{suggest(key, fields)}; valid: {', '.join(fields)}")


def _check_point(candidate: dict[str, Any], what: str) -> None:
    """One candidate through the checks a run config gets (the model fitted to no task yet)."""
    try:
        model_config(candidate["model"])
        TrainConfig.model_validate(candidate["train"])
        if candidate["quantization"] is not None:
            check_policy(candidate["quantization"])
    except AnyformerError as err:
        raise ConfigError(f"{what}: {err}") from None
    except ValueError as err:  # pydantic's, from TrainConfig
        first = err.errors()[0] if hasattr(err, "errors") else {"loc": (), "msg": str(err)}
        loc = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"{what}: train.{loc}: {first['msg']}") from None


def _check(space: Space) -> None:
    """Field names, then the representative point, then each value of each distribution
    with the rest held at the representative."""
    model = space.tree.get("model") or {}
    _check_model_fields(model)
    train_fields = list(TrainConfig.model_fields)
    for key in space.tree.get("train") or {}:
        if key not in train_fields:
            raise ConfigError(f"train.{key}: not a training field{suggest(key, train_fields)}; valid: {', '.join(train_fields)}")
    if "quantization" in space.tree:
        for value in _leaf_values(space.tree["quantization"]):
            if isinstance(value, str) and value not in SCHEMES and value != NO_QUANTIZATION:
                raise ConfigError(f"quantization: unknown scheme {value!r}{suggest(value, SCHEMES)}; valid: "
                                  f"{', '.join(SCHEMES)}")
    for node in _components_of(space.tree):
        kind = node.path.split(".")[-1]
        for name in node.alternatives:
            try:
                registry.get(kind, name)
            except ConfigError as err:
                raise ConfigError(f"{node.path}.choice.{name}: {err}") from None
    _check_point(space.representative(), "the first candidate (every parameter at its first value)")
    for path, dist in space.dists():
        for value in dist.points():
            def pick(d: Dist, name: str, _path=path, _value=value) -> Any:
                return _value if d.path == _path else d.points()[0]

            _check_point(realize(space.tree, pick), f"{path} = {value!r}")
    for node in _components_of(space.tree):
        for name in node.alternatives:
            def pick(d: Dist, n: str, _node=node, _name=name) -> Any:
                return _name if d.path == _node.path and list(d.values) == list(_node.alternatives) else d.points()[0]

            _check_point(realize(space.tree, pick), f"{node.path}.choice.{name}")


def _components_of(tree: dict[str, Any]) -> list[Components]:
    return [v for v in (tree.get("model") or {}).values() if isinstance(v, Components)]

