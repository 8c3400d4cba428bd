"""name -> component. `@register(kind, name)` on a class is all a new component needs
to appear in `anyformer list`, in configs, in presets and in the generic tests.

A component's options are the keyword parameters of its `__init__`; they are validated
(types coerced, unknown names rejected with a did-you-mean) before it is built.

The registry imports nothing of anyformer but its errors: `anyformer.catalog` imports the
component packages (each autoloads its modules with `import_submodules`), and importing
`anyformer` imports the catalog, so every component is registered before any lookup.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable
from typing import Any

import pydantic

from anyformer.errors import ConfigError, suggest, unknown

KINDS = ("mixer", "ffn", "norm", "position", "encoder", "head", "transition", "arch", "task", "problem")

# Arguments the model supplies to a component from its own config; a user never sets them
# as component options (they are model fields: dim, heads, max_len, causal, grid, ...).
CONTEXT_KEYS = frozenset({"dim", "heads", "max_len", "causal", "grid", "num_tokens", "layer", "config"})

_REGISTRY: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str) -> Callable[[type], type]:
    """Class decorator: make `cls` buildable as `build(kind, name, ...)`."""
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown component kind {kind!r}; valid: {', '.join(KINDS)}")

    def wrap(cls: type) -> type:
        existing = _REGISTRY[kind].get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ConfigError(f"{kind} {name!r} is registered twice ({existing.__module__} and {cls.__module__})")
        cls.registry_kind = kind
        cls.registry_name = name
        _REGISTRY[kind][name] = cls
        return cls

    return wrap


def import_submodules(package_name: str, package_path: list[str]) -> None:
    """Import every public module of a package so that its @register lines run: adding a
    component is adding a file. Called by each component package's __init__."""
    for info in sorted(pkgutil.iter_modules(package_path), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise unknown("component kind", kind, KINDS)


def list_components(kind: str | None = None) -> list[str]:
    """Registered names of one kind (sorted), or of every kind as 'kind:name'."""
    if kind is None:
        return [f"{k}:{n}" for k in KINDS for n in sorted(_REGISTRY[k])]
    _check_kind(kind)
    return sorted(_REGISTRY[kind])


def get(kind: str, name: str) -> type:
    """The class registered as `name`, or a ConfigError with the closest names."""
    _check_kind(kind)
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        raise unknown(kind, name, _REGISTRY[kind]) from None


def _signature_params(cls: type) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    return {
        n: p for n, p in params.items()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }


def _context_keys(cls: type) -> frozenset[str]:
    # A task is built from its own options alone (the model never hands it dim / max_len),
    # so a task parameter named like a context key (text-csv's `max_len`) is a user option.
    return frozenset() if getattr(cls, "registry_kind", None) == "task" else CONTEXT_KEYS


def context_params(cls: type) -> set[str]:
    """Which of the model-supplied arguments this component takes."""
    return set(_signature_params(cls)) & _context_keys(cls)


_SCHEMAS: dict[type, type[pydantic.BaseModel]] = {}


def options_schema(cls: type) -> type[pydantic.BaseModel]:
    """A pydantic model of the component's own options (its __init__ minus context args)."""
    if cls in _SCHEMAS:
        return _SCHEMAS[cls]
    try:
        # include_extras keeps `Annotated[T, Field(description=...)]`: an option's help text.
        hints = typing.get_type_hints(cls.__init__, include_extras=True)
    except Exception:  # unresolvable annotation: fall back to no type checking
        hints = {}
    fields: dict[str, Any] = {}
    context = _context_keys(cls)
    for n, p in _signature_params(cls).items():
        if n in context:
            continue
        ann = hints.get(n, Any)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[n] = (ann, default)
    schema = pydantic.create_model(
        f"{cls.__name__}Options",
        __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True),
        **fields,
    )
    _SCHEMAS[cls] = schema
    return schema


def option_names(cls: type) -> list[str]:
    return list(options_schema(cls).model_fields)


def validate_options(kind: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Coerce and check `options` for component `name`; returns only the options given."""
    cls = get(kind, name)
    schema = options_schema(cls)
    valid = list(schema.model_fields)
    for key in options:
        if key not in valid:
            hint = suggest(key, valid)
            listing = ", ".join(valid) if valid else "none"
            raise ConfigError(
                f"{kind} {name!r} has no option {key!r}{hint}; its options: {listing}"
            )
    try:
        parsed = schema(**options)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{kind} {name!r} option {loc!r}: {first['msg']} (got {first.get('input')!r})"
        ) from None
    return {k: getattr(parsed, k) for k in options}


def build(kind: str, name: str, **options: Any) -> Any:
    """Build a registered component. Context arguments (dim, heads, ...) pass straight
    through; every other keyword is validated against the component's options."""
    cls = get(kind, name)
    context = {k: options.pop(k) for k in list(options) if k in _context_keys(cls)}
    takes = context_params(cls)
    extra = set(context) - takes
    if extra:
        # A context value the component does not take is harmless (the model offers
        # dim/heads/... to every component); only drop it.
        context = {k: v for k, v in context.items() if k in takes}
    params = _signature_params(cls)
    missing = [
        k for k in takes - set(context)
        if params[k].default is inspect.Parameter.empty
    ]
    if missing:
        raise ConfigError(f"{kind} {name!r} needs {', '.join(sorted(missing))}; pass it, e.g. build({kind!r}, {name!r}, {sorted(missing)[0]}=...)")
    opts = validate_options(kind, name, options)
    return cls(**context, **opts)


def describe(kind: str, name: str) -> dict[str, Any]:
    """Catalogue row for `anyformer list`."""
    cls = get(kind, name)
    doc = (cls.__doc__ or "").strip().splitlines()
    return {
        "name": name,
        "kind": kind,
        "complexity": getattr(cls, "complexity", ""),
        "causal": getattr(cls, "supports_causal", None),
        "mask": getattr(cls, "supports_mask", None),
        "paper": getattr(cls, "paper", "") or (doc[0] if doc else ""),
        "options": option_names(cls),
    }


def _type_name(annotation: Any) -> str:
    """`int`, `str | None`, `list[str] | None`: the annotation as a user reads it."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def describe_options(kind: str, name: str) -> list[dict[str, Any]]:
    """Each option of a component, read from its options schema (so from its `__init__`):
    name, type, default (None when required), required, description ('' when undeclared)."""
    rows = []
    for option, info in options_schema(get(kind, name)).model_fields.items():
        required = info.is_required()
        rows.append({"name": option, "type": _type_name(info.annotation), "required": required,
                     "default": None if required else info.default, "description": info.description or ""})
    return rows
