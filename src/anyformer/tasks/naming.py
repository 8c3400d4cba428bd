"""Task names with an argument after a colon: 'ucr:GunPoint' is task 'ucr' with
dataset='GunPoint'. Which option the argument sets is declared by each task
(`Task.argument_option`, `Task.parse_argument`)."""
from __future__ import annotations

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
    if getattr(cls, "argument_option", None) is None:
        takers = [f"{t}:{registry.get('task', t).argument_option.upper()}" for t in registry.list_components("task")
                  if getattr(registry.get("task", t), "argument_option", None)]
        raise ConfigError(f"task {base!r} takes no ':' argument; tasks that do: {', '.join(takers)}")
    if not arg:
        raise ConfigError(f"task name {name!r} has nothing after ':'; e.g. {base}:{cls.argument_option.upper()}")
    return base, cls.parse_argument(arg)


def task_spec(text: str, **options: Any) -> ComponentSpec:
    """The ComponentSpec of a command-line task name plus options, checked against the
    registry once every option is in (so a required `path` may come from `task.path=`)."""
    name, implied = parse_task_name(text)
    spec = ComponentSpec.model_validate({"name": name, **implied, **options})
    spec.check("task", "task")
    return spec
