"""The import structure: no loop between the top-level packages (or between any two modules of
them), and the core package `longtalk` imports none of the layers built on it.

    workers, clients, tools:  worker.py  starter.py  api/  comfy_graphs/
    Temporal code:            workflows/  activities/
    the core:                 longtalk/

Every import counts, wherever it stands: at the top of a module, inside a function (a lazy
import still ties the two at run time) or under `if TYPE_CHECKING:`. Read from the source with
`ast`, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.media import ROOT

PACKAGES = ("longtalk", "activities", "workflows", "api", "comfy_graphs")
MODULES = ("worker", "starter")
UNITS = PACKAGES + MODULES
CORE = "longtalk"


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the units above."""
    out = {name: ROOT / f"{name}.py" for name in MODULES}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(module of ours imported, line of its first import) for each module that one module imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a name inside a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found[target] = min(found.get(target, node.lineno), node.lineno)
    return sorted(found.items())


def unit_of(module: str) -> str:
    return module.split(".")[0]


def import_graph() -> dict[str, list[tuple[str, int]]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    """The reader sees the imports that are there (a test of the reader itself)."""
    graph = {module: {target for target, _ in targets} for module, targets in import_graph().items()}
    assert {"longtalk.settings", "workflows.render", "activities.gpu"} <= graph["worker"]
    assert "longtalk.windows" in graph["longtalk.spec"]  # a relative import
    assert "longtalk.backends.preview" in graph["longtalk.backends"]  # one inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_loop_between_top_level_packages():
    edges: dict[str, set[str]] = {unit: set() for unit in UNITS}
    for module, targets in import_graph().items():
        edges[unit_of(module)] |= {unit_of(t) for t, _ in targets if unit_of(t) != unit_of(module)}
    assert cycles(edges) == [], f"import loops between top-level packages: {cycles(edges)}"


def test_no_import_loop_between_modules():
    graph = import_graph()
    edges = {module: {t for t, _ in targets} for module, targets in graph.items()}
    assert cycles(edges) == [], f"modules that import each other (directly or around a loop): {cycles(edges)}"


def test_the_core_imports_no_layer_built_on_it():
    wrong = [f"{module} (line {line}) imports {target}"
             for module, targets in import_graph().items() if unit_of(module) == CORE
             for target, line in targets if unit_of(target) != CORE]
    assert not wrong, "longtalk must not import the layers built on it:\n" + "\n".join(wrong)
