"""Task names with an argument after a colon: 'ucr:GunPoint' is task 'ucr' with dataset='GunPoint'."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anyformer.errors import ConfigError

if TYPE_CHECKING:  # config imports the registry, which imports tasks: only for the annotation
    from anyformer.config import ComponentSpec

# The option a 'name:ARG' task name sets, per task.
ARGUMENT_OPTION = {"ucr": "dataset", "forecast": "path"}


def parse_task_name(name: str) -> tuple[str, dict[str, Any]]:
    """('ucr', {'dataset': 'GunPoint'}) for 'ucr:GunPoint'; a plain name comes back with {}.
    'forecast:statsmodels:co2' sets source, 'forecast:FILE.csv' sets path."""
    base, sep, arg = name.partition(":")
    if not sep:
        return name, {}
    if base not in ARGUMENT_OPTION:
        raise ConfigError(f"task {base!r} takes no ':' argument; tasks that do: {', '.join(f'{k}:{v.upper()}' for k, v in ARGUMENT_OPTION.items())}")
    if not arg:
        raise ConfigError(f"task name {name!r} has nothing after ':'; e.g. ucr:GunPoint")
    if base == "forecast" and arg.split(":", 1)[0] in ("statsmodels", "synthetic"):
        return base, {"source": arg}
    return base, {ARGUMENT_OPTION[base]: arg}


def task_spec(text: str, **options: Any) -> ComponentSpec:
    """The ComponentSpec of a command-line task name, checked against the registry."""
    from anyformer.config import ComponentSpec

    name, implied = parse_task_name(text)
    spec = ComponentSpec.model_validate({"name": name, **implied, **options})
    spec.check("task", "task")
    return spec
