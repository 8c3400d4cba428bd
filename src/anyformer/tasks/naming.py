"""Task names with an argument after a colon: 'ucr:GunPoint' is task 'ucr' with
dataset='GunPoint'. Which option the argument sets is declared by each task
(`Task.argument_option`, `Task.parse_argument`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from anyformer import registry
from anyformer.config import ComponentSpec
from anyformer.errors import ConfigError


def parse_task_name(name: str) -> tuple[str, dict[str, Any]]:
    """('ucr', {'dataset': 'GunPoint'}) for 'ucr:GunPoint'; a plain name comes back with {}.
    'forecast:statsmodels:co2' sets source, 'forecast:FILE.csv' sets path."""
    base, sep, arg = name.partition(":")
    if not sep:
        return name, {}
    cls = registry.get("task", base)
    form = argument_form(base)
    if form is None:
        takers = [f for t in registry.list_components("task") if (f := argument_form(t))]
        raise ConfigError(f"task {base!r} takes no ':' argument; tasks that do: {', '.join(takers)}")
    if not arg:
        raise ConfigError(f"task name {name!r} has nothing after ':'; e.g. {form}")
    return base, cls.parse_argument(arg)


def argument_form(name: str) -> str | None:
    """'text-csv:PATH' for a task whose name takes an argument (`argument_option`), else None."""
    option = getattr(registry.get("task", name), "argument_option", None)
    return f"{name}:{option.upper()}" if option else None


def _missing(name: str, options: dict[str, Any]) -> ConfigError | None:
    """The error for required options not given, naming each and how to give it (the
    registry's own message would be pydantic's 'Field required (got {...})')."""
    missing = [o["name"] for o in registry.describe_options("task", name) if o["required"] and o["name"] not in options]
    if not missing:
        return None
    form = argument_form(name)
    cls = registry.get("task", name)
    ways = [f"set {' and '.join(f'task.{m}={m.upper()}' for m in missing)}"]
    if form and cls.argument_option in missing:
        ways.insert(0, f"write the task as {form}")
    return ConfigError(f"task {name!r} needs {', '.join(repr(m) for m in missing)} (required): {' or '.join(ways)}; "
                       f"see `anyformer show task {name}`")


def task_spec(text: str, **options: Any) -> ComponentSpec:
    """The ComponentSpec of a command-line task name plus options, checked against the
    registry once every option is in (so a required `path` may come from `task.path=`);
    the task's `file_options` are made absolute."""
    name, implied = parse_task_name(text)
    merged = {**implied, **options}
    for key in registry.get("task", name).file_options:
        if isinstance(merged.get(key), str):
            merged[key] = str(Path(merged[key]).expanduser().resolve())
    missing = _missing(name, merged)
    if missing is not None:
        raise missing
    spec = ComponentSpec.model_validate({"name": name, **merged})
    spec.check("task", "task")
    return spec
