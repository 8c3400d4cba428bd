"""name -> component. `@register(kind, name)` on a class is all a new component needs
to appear in `anyformer list`, in configs, in presets and in the generic tests.

A component's options are the keyword parameters of its `__init__`; they are validated
(types coerced, unknown names rejected with a did-you-mean) before it is built. A valid range
is declared on the parameter itself, `dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0`,
so it is checked here, named in the error and shown by `anyformer show KIND NAME`. Float
options must be finite unless a parameter declares `Field(allow_inf_nan=True)`.

The registry imports nothing of anyformer but its errors: `anyformer.catalog` imports the
component packages (each autoloads its modules with `import_submodules`), and importing
`anyformer` imports the catalog, so every component is registered before any lookup.
"""
from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any

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
        # No NaN or infinity in a float option: torch turns them into NaN outputs or raw
        # errors far from the config (an int(nan) hidden size, a dropout of inf).
        __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False),
        **fields,
    )
    _SCHEMAS[cls] = schema
    return schema


def option_names(cls: type) -> list[str]:
    return list(options_schema(cls).model_fields)


def validate_options(kind: str, name: str, options: dict[str, Any], where: str | None = None) -> dict[str, Any]:
    """Coerce and check `options` for component `name`; returns only the options given.
    `where` is the config path of the component ('model.ffn'): errors then name the option
    by its path ('model.ffn.dropout must be ...')."""
    cls = get(kind, name)
    schema = options_schema(cls)
    valid = list(schema.model_fields)
    for key in options:
        if key not in valid:
            hint = suggest(key, valid)
            listing = ", ".join(valid) if valid else "none"
            prefix = f"{where}: " if where else ""
            raise ConfigError(
                f"{prefix}{kind} {name!r} has no option {key!r}{hint}; its options: {listing}"
            )
    try:
        parsed = schema(**options)
    except pydantic.ValidationError as err:
        raise _option_error(kind, name, schema, err, where, options) from None
    return {k: getattr(parsed, k) for k in options}


def _option_error(kind: str, name: str, schema: type[pydantic.BaseModel], err: pydantic.ValidationError,
                  where: str | None, options: dict[str, Any]) -> ConfigError:
    """One line: the option (by config path when known), what it must be, what it got."""
    first = err.errors()[0]
    option = str(first["loc"][0]) if first["loc"] else "?"
    info = schema.model_fields.get(option)
    if info is None:  # a model-level error: no single option to name
        return ConfigError(f"{where + ': ' if where else ''}{kind} {name!r}: {first['msg']}")
    value = options.get(option, first.get("input"))
    subject = f"{where}.{option}" if where else f"{kind} {name!r}: {option}"
    if first["type"] in _RANGE_ERRORS and _range_of(info):
        expected = _range_of(info)  # the type was right: only the range needs saying
    else:
        expected = expectation(info.annotation, info.metadata)
    if isinstance(value, float) and not math.isfinite(value):
        expected = expected.replace("a number", "a finite number", 1)
    # An item of a list or pair: say which one is wrong; a near miss of a choice: the closest.
    inner = [p for p in first["loc"][1:] if isinstance(p, int)]
    detail = f" (item {inner[0]}: {first['msg'][0].lower()}{first['msg'][1:]})" if inner else ""
    if isinstance(value, str) and _choices(info.annotation):
        detail = suggest(value, _choices(info.annotation))
    owner = f" ({kind} {name!r})" if where else ""
    return ConfigError(f"{subject} must be {expected}, got {value!r}{detail}{owner}")


_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})
_NOUNS = {int: ("an", "integer"), float: ("a", "number"), str: ("a", "string"), bool: ("", "true or false")}


def _choices(annotation: Any) -> list[str]:
    """The values of a Literal option (inside an Optional too); [] for any other."""
    annotation, _ = _split_annotated(annotation)
    members = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    return [str(c) for m in members if typing.get_origin(m) is typing.Literal for c in typing.get_args(m)]


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def value_range(metadata: Any) -> str:
    """'in [0, 1)', '>= 1', '> 0', '<= 8' or '' from a field's constraint metadata."""
    lo = hi = None
    for m in metadata:
        if isinstance(m, pydantic.fields.FieldInfo):
            m = value_range(m.metadata)  # a nested Field: its constraints as a string
            if m:
                return m
            continue
        # pydantic keeps each bound as an annotated-types object with one of these attributes.
        if getattr(m, "ge", None) is not None:
            lo = ("[", ">=", m.ge)
        elif getattr(m, "gt", None) is not None:
            lo = ("(", ">", m.gt)
        if getattr(m, "le", None) is not None:
            hi = ("]", "<=", m.le)
        elif getattr(m, "lt", None) is not None:
            hi = (")", "<", m.lt)
    if lo and hi:
        return f"in {lo[0]}{_fmt(lo[2])}, {_fmt(hi[2])}{hi[0]}"
    if lo:
        return f"{lo[1]} {_fmt(lo[2])}"
    if hi:
        return f"{hi[1]} {_fmt(hi[2])}"
    return ""


def _split_annotated(annotation: Any, metadata: Any = ()) -> tuple[Any, list[Any]]:
    meta = list(metadata)
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        meta += extra
    return annotation, meta


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def expectation(annotation: Any, metadata: Any = (), plural: bool = False) -> str:
    """What a value of this annotation must be, as a user reads it: 'a number in [0, 1)',
    'an integer >= 1 or null', 'a pair of integers >= 1'."""
    annotation, meta = _split_annotated(annotation, metadata)
    rng = value_range(meta)
    if _is_union(annotation):
        args = typing.get_args(annotation)
        parts = [expectation(a, plural=plural) for a in args if a is not type(None)]
        text = " or ".join(parts) + (" or null" if type(None) in args else "")
        return f"{text} ({rng})" if rng else text
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(annotation))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis] or [Any]
        items = expectation(args[0], plural=True)
        head = "a pair of" if origin is tuple and len(typing.get_args(annotation)) == 2 else "a list of"
        return f"{head} {items}"
    article, noun = _NOUNS.get(annotation, ("", _type_name(annotation)))
    if plural and annotation in (int, float, str):
        noun += "s"
    text = noun if plural or not article else f"{article} {noun}"
    return f"{text} {rng}" if rng else text


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
        # Incremental decoding only means something for a mixer that can be causal.
        "decode": getattr(cls, "supports_decoding", None) if getattr(cls, "supports_causal", False) else None,
        "paper": getattr(cls, "paper", "") or (doc[0] if doc else ""),
        "options": option_names(cls),
    }


def _type_name(annotation: Any) -> str:
    """`int`, `str | None`, `list[str] | None`: the annotation as a user reads it (declared
    ranges left out: `describe_options` shows them apart)."""
    annotation, _ = _split_annotated(annotation)
    if isinstance(annotation, list):  # a Callable's argument list
        return f"[{', '.join(_type_name(a) for a in annotation)}]"
    if _is_union(annotation):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(c) for c in typing.get_args(annotation))
    origin = typing.get_origin(annotation)
    if origin is not None and typing.get_args(annotation):
        name = getattr(origin, "__name__", str(origin).replace("typing.", ""))
        return f"{name}[{', '.join(_type_name(a) for a in typing.get_args(annotation))}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def _type_with_range(annotation: Any, metadata: Any = ()) -> str:
    """'float in [0, 1)', 'int >= 1 | None': the type with each member's declared range."""
    annotation, meta = _split_annotated(annotation, metadata)
    rng = value_range(meta)
    if _is_union(annotation) and not rng:
        return " | ".join(_type_with_range(a) for a in typing.get_args(annotation))
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple) and args:
        name = f"{origin.__name__}[{', '.join(_type_with_range(a) for a in args)}]"
    else:
        name = _type_name(annotation)
    return f"{name} {rng}" if rng else name


def _range_of(info: pydantic.fields.FieldInfo) -> str:
    """The declared range of an option, on the field or inside its union ('int >= 1 | None')."""
    own = value_range(info.metadata)
    if own:
        return own
    annotation, meta = _split_annotated(info.annotation)
    inner = [value_range(_split_annotated(a)[1]) for a in typing.get_args(annotation)] if _is_union(annotation) else []
    return next((r for r in inner if r), value_range(meta))


def describe_options(kind: str, name: str) -> list[dict[str, Any]]:
    """Each option of a component, read from its options schema (so from its `__init__`):
    name, type (with its declared range, e.g. 'float in [0, 1)'), range ('' when none),
    default (None when required), required, description ('' when undeclared)."""
    rows = []
    for option, info in options_schema(get(kind, name)).model_fields.items():
        required = info.is_required()
        rows.append({"name": option, "type": _type_with_range(info.annotation, info.metadata), "range": _range_of(info),
                     "required": required, "default": None if required else info.default,
                     "description": info.description or ""})
    return rows
