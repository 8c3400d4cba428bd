"""The house rules of DESIGN.md that hold for the code as a whole: imports form no cycle
(counting imports inside functions), no function-level import of anyformer modules dodges
one, the layers' contracts in pyproject.toml hold (`lint-imports`), files stay small."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "anyformer"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def imported(node: ast.AST, here: str) -> list[str]:
    """anyformer modules an import statement names (`from pkg import mod` names pkg.mod)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "anyformer"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: resolve against this module's package
        package = here if MODULES[here].name == "__init__.py" else here.rpartition(".")[0]
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    if base.split(".")[0] != "anyformer":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """module -> modules it imports anywhere in it; and every import inside a function."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    in_functions: list[tuple[str, int, str]] = []
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            graph[mod].update(t for t in imported(node, mod) if t != mod)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    in_functions += [(mod, sub.lineno, t) for t in imported(sub, mod)]
    return graph, in_functions


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_counting_imports_inside_functions():
    graph, _ = import_graph()
    assert cycles(graph) == []


def test_no_function_level_import_of_anyformer_modules():
    _, in_functions = import_graph()
    assert in_functions == []


def test_nothing_inside_the_package_imports_its_root():
    graph, _ = import_graph()
    assert sorted(m for m, targets in graph.items() if "anyformer" in targets) == []


def test_layer_contracts_hold():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    result = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_no_source_file_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


@pytest.mark.parametrize("pattern, where", [
    ("nn.Module.__init__(self)", "nn"),
    ("object.__setattr__", "nn"),
])
def test_no_constructor_bypass_in_the_model_layer(pattern, where):
    offenders = [str(p.relative_to(SRC)) for p in (SRC / where).rglob("*.py") if pattern in p.read_text()]
    assert offenders == []


def test_report_imports_nothing_from_train():
    graph, _ = import_graph()
    bad = {m: sorted(t for t in targets if t.startswith("anyformer.train"))
           for m, targets in graph.items() if m.startswith("anyformer.report")}
    assert {m: t for m, t in bad.items() if t} == {}


# ---------------------------------------------------------------- the diagram (`python tests/test_layers.py [SRC]`)

LAYERS = [  # top to bottom, as DESIGN.md draws them
    ("cli", ("cli", "__main__")),
    ("jobs", ("compare", "compress", "search", "studies")),
    ("engine", ("train", "bench", "infer", "interop", "report")),
    ("catalog", ("catalog",)),
    ("tasks", ("tasks",)),
    ("nn", ("nn",)),
    ("config", ("config",)),
    ("bottom", ("presets", "runtime", "rundir", "registry", "errors")),
]


def layer_of(module: str) -> int | None:
    first = module.split(".")[1] if "." in module else None
    return next((i for i, (_, tops) in enumerate(LAYERS) if first in tops), None)


def diagram() -> str:
    """Modules per layer and the imports between layers: down (allowed), up (a violation),
    and imports of the package root from inside it."""
    graph, in_functions = import_graph()
    lines = []
    for i, (name, tops) in enumerate(LAYERS):
        mods = sorted(m for m in graph if layer_of(m) == i)
        lines.append(f"{name:8s} {len(mods):3d} modules: {', '.join(sorted({m.split('.')[1] for m in mods}))}")
    down = up = same = root = 0
    ups, sideways = [], []
    for m, targets in graph.items():
        for t in targets:
            a, b = layer_of(m), layer_of(t)
            if t == "anyformer":
                root += 1
            elif a is None or b is None:
                continue
            elif b > a:
                down += 1
            elif b < a:
                up += 1
                ups.append(f"  up: {m} -> {t}")
            elif m.split(".")[1] != t.split(".")[1] and name_of(a) in ("jobs", "engine"):
                sideways.append(f"  sideways: {m} -> {t}")
            else:
                same += 1
    lines.append(f"imports between modules: {down} down, {same} within a package or the bottom, {len(sideways)} between "
                 f"sibling engine/job packages, {up} up, {root} of the package root; {len(in_functions)} inside functions; "
                 f"import cycles: {len(cycles(graph))}")
    return "\n".join(lines + sorted(ups) + sorted(set(sideways)))


def name_of(layer: int) -> str:
    return LAYERS[layer][0]


if __name__ == "__main__":
    if len(sys.argv) > 1:  # another checkout's src/anyformer (e.g. a git worktree of an older commit)
        SRC = Path(sys.argv[1]).resolve()
        MODULES = {module_name(p): p for p in SRC.rglob("*.py")}
    print(diagram())
