"""Task names on the command line: `digits`, or `ucr:GunPoint` where the part after the
colon fills the option the task names in `name_argument`."""
from __future__ import annotations

from anyformer import registry
from anyformer.config import ComponentSpec
from anyformer.errors import ConfigError


def task_spec(text: str) -> ComponentSpec:
    name, _, arg = text.partition(":")
    cls = registry.get("task", name)
    if not arg:
        return ComponentSpec(name=name)
    option = getattr(cls, "name_argument", None)
    if option is None:
        raise ConfigError(f"task {name!r} takes no ':argument' (got {text!r}); set its options with --set task.KEY=VALUE")
    return ComponentSpec.model_validate({"name": name, option: arg})
