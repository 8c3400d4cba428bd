"""Why an ONNX export failed, in one line: the component, its source line and the cause.

torch.export and torch.onnx raise long multi-part errors whose useful facts sit at
different depths: the root cause's first line; for a data-dependent branch, the innermost
anyformer frame still on the traceback; for an axis that would not stay dynamic, the
guard the tracer recorded (with its source location) on the fake-tensor mode of the
failed trace; for an operator with no ONNX translation, the graph node it names, whose
stack trace points at the code. Each location is mapped to the registered component
(mixer, ffn, encoder, ...) whose class holds that line."""
from __future__ import annotations

import inspect
import re
import traceback
from pathlib import Path
from typing import Any

from torch import nn

from anyformer.errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[1]  # src/anyformer
MESSAGE_LIMIT = 300
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch.onnx colours its messages
SOURCE_LINE = re.compile(r"([^\s\"'(]*anyformer/[^\s\"':]+\.py)\"?(?::|, line )(\d+)")
NODE = re.compile(r"translating node %(\w+)")
AXES = re.compile(r"Constraints violated \(([^)]*)\)")
Location = tuple[str, int]  # (path inside the package, line)


def chain(err: BaseException) -> list[BaseException]:
    """err and its explicit causes, outermost first (torch.onnx wraps torch.export's
    error); implicit contexts are skipped, being whatever torch was handling meanwhile."""
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__
    return seen


def first_line(errors: list[BaseException]) -> str:
    """The root cause's first non-empty line, cut to MESSAGE_LIMIT characters."""
    for err in reversed(errors):
        lines = [ln.strip() for ln in ANSI.sub("", str(err)).splitlines() if ln.strip()]
        if lines:
            text = f"{type(err).__name__}: {lines[0]}"
            return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."
    return type(errors[-1]).__name__


def _inside(path: str) -> str | None:
    """'nn/mixers/gau.py' for a file of the package (absolute or 'src/anyformer/...')."""
    parts = Path(path).parts
    if "anyformer" not in parts:
        return None
    rel = Path(*parts[len(parts) - parts[::-1].index("anyformer"):])
    return None if rel.parts[:1] == ("interop",) else rel.as_posix()


def _parse(text: str) -> Location | None:
    """The last package source line a stack-trace text names."""
    found = [(_inside(f), int(n)) for f, n in SOURCE_LINE.findall(text)]
    found = [(f, n) for f, n in found if f]
    return found[-1] if found else None


def _frame_location(errors: list[BaseException]) -> Location | None:
    """The innermost package frame on the tracebacks (the code that was running)."""
    for err in reversed(errors):
        found = [(_inside(fr.f_code.co_filename), line) for fr, line in traceback.walk_tb(err.__traceback__)]
        found = [(f, n) for f, n in found if f]
        if found:
            return found[-1]
    return None


def _guard_location(errors: list[BaseException]) -> tuple[Location, str] | None:
    """(where, guard) of the first guard recorded in package code during the failed trace:
    what fixed an axis that was asked to vary."""
    for err in errors:
        for frame, _ in traceback.walk_tb(err.__traceback__):
            mode = frame.f_locals.get("fake_mode")
            env = getattr(mode, "shape_env", None)
            for guard in getattr(env, "guards", ()):
                where = _parse(str(getattr(guard, "sloc", "")))
                if where and guard.expr.free_symbols:
                    return where, str(guard.expr)
    return None


def _node_location(errors: list[BaseException], program: Any) -> Location | None:
    """Where the graph node a translation error names came from (its stack trace)."""
    names = [m.group(1) for e in errors for m in [NODE.search(str(e))] if m]
    if not names or program is None:
        return None
    nodes = {n.name: n for n in program.graph.nodes}
    node = nodes.get(names[0])
    return _parse(node.meta.get("stack_trace") or "") if node is not None else None


def _component(model: nn.Module, where: Location) -> str | None:
    """"mixer 'gau'" for the registered class of `model` whose source holds `where` (else
    the first one defined in that file)."""
    in_file = []
    for cls in dict.fromkeys(type(m) for m in model.modules() if hasattr(type(m), "registry_name")):
        try:
            lines, start = inspect.getsourcelines(cls)
            path = _inside(inspect.getsourcefile(cls) or "")
        except (OSError, TypeError):
            continue
        if path != where[0]:
            continue
        label = f"{cls.registry_kind} {cls.registry_name!r}"
        if start <= where[1] < start + len(lines):
            return label
        in_file.append(label)
    return in_file[0] if in_file else None


def explain(err: BaseException, model: nn.Module, program: Any = None) -> ConfigError:
    """A torch.export / torch.onnx failure -> one line: component, source line, cause.
    `program` is the ExportedProgram when the failure came in the ONNX translation."""
    errors = chain(err)
    cause = first_line(errors)
    where = None
    axes = next((m.group(1) for e in errors for m in [AXES.search(str(e))] if m), None)
    if axes is not None:
        guard = _guard_location(errors)
        where = guard[0] if guard else None
        cause = f"the {axes} axis cannot vary (the code fixes it: {guard[1] if guard else 'see torch.export'})"
    elif program is not None:
        where = _node_location(errors, program)
    else:
        where = _frame_location(errors)
    arch = f"arch {getattr(type(model), 'registry_name', type(model).__name__)!r}"
    label = (_component(model, where) if where else None) or arch
    at = f" ({where[0]}:{where[1]})" if where else ""
    return ConfigError(f"ONNX export failed in {label}{at}: {cause}")
