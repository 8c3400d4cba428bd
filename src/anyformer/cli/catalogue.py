"""`anyformer list` and `anyformer show`: the catalogue of components, presets and tasks."""
from __future__ import annotations

from typing import Optional

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from anyformer import catalog, registry
from anyformer.cli.app import _yes_no, app, console
from anyformer.config import model_config, parse_assignments
from anyformer.errors import ConfigError, unknown
from anyformer.presets import list_presets, load_preset
from anyformer.tasks import describe as task_describe


@app.command("list")
def list_cmd(kind: Optional[str] = typer.Argument(None, help="mixer, ffn, norm, position, encoder, head, task or preset")) -> None:
    """The catalogue: every registered component (and preset) with its cost and paper;
    `list task` shows each task's NAME:ARG form and required options."""
    kinds = list(registry.KINDS) + ["preset"]
    if kind is not None and kind not in kinds:
        raise unknown("kind", kind, kinds)
    if kind == "task":
        _list_tasks()
        return
    table = Table(title="anyformer components", show_lines=False)
    for col in ("name", "kind", "complexity", "causal", "mask", "decode", "paper"):
        table.add_column(col, overflow="fold")
    for k in (kinds if kind is None else [kind]):
        if k == "preset":
            for name in list_presets():
                p = load_preset(name)
                table.add_row(name, "preset", "", "", "", "", str(p.get("paper", "")))
            continue
        for name in registry.list_components(k):
            d = registry.describe(k, name)
            table.add_row(name, k, str(d["complexity"]), _yes_no(d["causal"]), _yes_no(d["mask"]), _yes_no(d["decode"]), str(d["paper"]))
    console.print(table)


def _list_tasks() -> None:
    # A task's required options are what a user must supply, so they get their own column.
    table = Table(title="anyformer tasks (options: `anyformer show task NAME`)")
    for col in ("name", "on the command line", "required options", "problem", "inputs", "paper"):
        table.add_column(col, overflow="fold")
    for name in registry.list_components("task"):
        t = task_describe.task_summary(name)
        table.add_row(name, t["form"], ", ".join(t["required"]) or "-", t["problem"], t["modality"], t["paper"])
    console.print(table)


def _show_component(kind: str, name: Optional[str]) -> None:
    """`show KIND NAME`: each option of a registered component, from its option model."""
    if name is None:
        raise ConfigError(f"show {kind} needs a name: `anyformer show {kind} NAME`; {kind}s: {', '.join(registry.list_components(kind))}")
    options = registry.describe_options(kind, name)
    if kind == "task":
        t = task_describe.task_details(name)
        console.print(f"[bold]task {escape(name)}[/]: {escape(t['doc'])}", highlight=False)
        console.print(f"problem: {t['problem']}; inputs: {t['modality']}")
        arg = f"; {t['argument']}" if t["argument"] else ""
        console.print(escape(f"command line: compare --task {t['form']}, train --set task={t['form']}{arg}"), highlight=False)
        example = next((f" (e.g. --set task.{o['name']}={task_describe.format_default(o)})" for o in options if not o["required"] and o["default"] is not None), "")
        console.print(escape(f"other options: --set task.OPTION=VALUE, one --set per option{example}"), highlight=False)
    table = Table(title=f"{kind} {name}: options")
    for col in ("option", "type", "default", "required", "description"):
        table.add_column(col, overflow="fold")
    for o in options:
        table.add_row(o["name"], escape(o["type"]), escape(task_describe.format_default(o)), _yes_no(o["required"]), escape(o["description"]))
    console.print(table)
    required = [o["name"] for o in options if o["required"]]
    console.print(f"required: {', '.join(required) if required else 'none'}")


@app.command("show")
def show_cmd(
    source: str = typer.Argument(..., help="preset name or YAML path; or a kind (task, mixer, ...) and then NAME"),
    name: Optional[str] = typer.Argument(None, help="with a kind: the component, e.g. `show task text-csv`"),
    set_: list[str] = typer.Option([], "--set", help="override, key=value, one --set per assignment (--set mixer=linear --set mixer.window=8)"),
) -> None:
    """Print the resolved config and the parameter count of each part; `show task NAME` (any
    kind) prints the component's options: type, default, required, description."""
    if source in registry.KINDS:
        if set_:
            raise ConfigError(f"--set applies to a preset or YAML, not to `show {source}`")
        _show_component(source, name)
        return
    if name is not None and "=" in name:
        # `--set a=1 b=2` leaves b=2 as a stray argument: say the form that works.
        raise ConfigError(f"stray argument {name!r}: --set takes one key=value, so repeat it (--set {(set_ or ['k=v'])[-1]} --set {name})")
    if name is not None:
        raise ConfigError(f"show {source!r} takes no second argument {name!r}; `show KIND NAME` needs a kind: {', '.join(registry.KINDS)}")
    cfg = model_config(source, **parse_assignments(set_))
    console.print(yaml.safe_dump({"model": cfg.to_dict()}, sort_keys=False).rstrip())
    model = catalog.create(cfg)
    table = Table(title=f"parameters: {source}")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for part, n in model.parameter_report().items():
        table.add_row(part, f"{n:,}")
    console.print(table)
