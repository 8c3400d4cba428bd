"""What a task takes, for `anyformer list task` and `anyformer show task NAME`.

Everything is read from the registry's option model of the task class (its `__init__`:
types, defaults, `Annotated[..., Field(description=...)]`) and from its class attributes
(`argument_option`, `problem`, `modality`), so the help cannot drift from what is validated.
Plain data comes back; the command line lays it out.
"""
from __future__ import annotations

import inspect
from typing import Any

from anyformer import registry
from anyformer.tasks.base import Task
from anyformer.tasks.naming import argument_form


def required_options(name: str) -> list[str]:
    """Options task `name` cannot run without (no default in its `__init__`)."""
    return [o["name"] for o in registry.describe_options("task", name) if o["required"]]


def argument_help(name: str) -> str:
    """How 'NAME:ARG' reads its ARG ("PATH sets option 'path'"), with the task's own rule
    when it overrides `parse_argument` (forecast: 'statsmodels:co2' is a source, not a file);
    '' for a task that takes no ARG."""
    form = argument_form(name)
    if form is None:
        return ""
    cls = registry.get("task", name)
    text = f"{form.partition(':')[2]} sets option {cls.argument_option!r}"
    if cls.parse_argument.__func__ is not Task.parse_argument.__func__:
        rule = inspect.getdoc(cls.parse_argument) or ""
        text += f" ({rule.rstrip('.')})" if rule else ""
    return text


def format_default(option: dict[str, Any]) -> str:
    """A default as it would be typed after `--set task.OPTION=`; '-' when required."""
    if option["required"]:
        return "-"
    value = option["default"]
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def task_summary(name: str) -> dict[str, Any]:
    """One row of `anyformer list task`."""
    cls = registry.get("task", name)
    return {"name": name, "form": argument_form(name) or name, "required": required_options(name),
            "problem": cls.problem, "modality": cls.modality, "paper": cls.paper}


def task_doc(name: str) -> str:
    """The task's docstring, followed by those of the classes it shares rules with (text-csv
    and text-jsonl keep tokenizers, labels and splits in their common base)."""
    cls = registry.get("task", name)
    docs = [inspect.cleandoc(c.__doc__) for c in cls.__mro__
            if c is not Task and issubclass(c, Task) and c.__dict__.get("__doc__")]
    return "\n\n".join(dict.fromkeys(docs))  # a doc inherited unchanged is printed once


def task_details(name: str) -> dict[str, Any]:
    """Everything `anyformer show task NAME` prints: summary, doc, argument, options."""
    return {**task_summary(name), "doc": task_doc(name), "argument": argument_help(name),
            "options": registry.describe_options("task", name)}
