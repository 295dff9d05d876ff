"""The architecture's boundaries, held by the imports themselves.

Read from the source (``ast``), so every import counts, including those inside
functions (the lazy ones):

- the worker side (``executor/worker``) imports only the standard library and itself,
  relatively: it is what every Parsl worker loads, and what ``ship_runtime`` sends
  under another package name;
- a policy (``executor/policy``) decides from plain data: it imports no module that
  does I/O, only the model, the errors and pure parts of the standard library;
- only the store (``executor/store``) runs SQL or imports SQLite;
- no two modules import each other, directly or around a loop (a module importing
  its own package's ``__init__`` is how packages work, not a cycle).

Model: pallets/click ``tests/test_imports.py``.
"""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "executor"

# The pure part of the standard library a policy may use.
PURE_STDLIB = {
    "__future__", "bisect", "collections", "dataclasses", "enum", "fractions", "functools",
    "heapq", "itertools", "math", "numbers", "operator", "re", "statistics", "typing",
}  # fmt: skip
# What a policy may import from pilot itself: plain data, and the errors it raises.
PURE_PILOT = ("executor.model", "executor.policy", "executor.errors")
SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|PRAGMA|BEGIN|COMMIT)\b")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return _modules()[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """What ``from X import a, b`` in ``module`` imports: X, or X.a where that is a module."""
    if node.level:
        base = module if _is_package(module) else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    found = [f"{target}.{alias.name}" for alias in node.names]
    modules = [name for name in found if name in _modules()]
    return modules if len(modules) == len(found) else [target, *modules]


@cache
def _imports(module: str) -> tuple[tuple[str, ast.AST, bool], ...]:
    """(imported module, node, whether inside a ``try`` that catches ImportError)."""
    tree = ast.parse(_modules()[module].read_text())
    guarded: set[int] = set()
    typing_only: set[int] = set()  # under `if TYPE_CHECKING:`: never imported at run time
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(child) for stmt in node.body for child in ast.walk(stmt))
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            guarded.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = _resolve(module, node)
        else:
            continue
        found.extend((name, node, id(node) in guarded) for name in names)
    return tuple(found)


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _where(module: str, node: ast.AST) -> str:
    return f"{_modules()[module].relative_to(ROOT)}:{node.lineno}"


def _side(prefix: str) -> list[str]:
    names = [name for name in _modules() if _in(name, prefix)]
    assert names, f"no modules under {prefix}: the layout changed, update this test"
    return names


@pytest.mark.parametrize("module", _side("executor.worker"))
def test_the_worker_side_imports_only_the_standard_library_and_itself(module: str) -> None:
    bad = []
    for name, node, guarded in _imports(module):
        top = name.partition(".")[0]
        if isinstance(node, ast.ImportFrom) and node.level:
            continue  # itself, relatively: the shipped runtime has another package name
        if top in sys.stdlib_module_names:
            continue
        if top == "psutil" and guarded:
            continue  # measured from /proc when it is missing
        bad.append(f"{_where(module, node)} imports {name}")
    assert bad == []


@pytest.mark.parametrize("module", _side("executor.policy"))
def test_a_policy_imports_nothing_that_does_io(module: str) -> None:
    bad = [
        f"{_where(module, node)} imports {name}"
        for name, node, _ in _imports(module)
        if not (name.partition(".")[0] in PURE_STDLIB or any(_in(name, p) for p in PURE_PILOT))
    ]
    assert bad == []


@pytest.mark.parametrize("module", [m for m in _modules() if not _in(m, "executor.store")])
def test_only_the_store_runs_sql(module: str) -> None:
    tree = ast.parse(_modules()[module].read_text())
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            text = first.value if isinstance(first, ast.Constant) else ""
        else:
            continue
        if isinstance(text, str) and SQL.match(text):
            bad.append(f"{_where(module, node)}: {text.strip()[:60]!r}")
    bad += [
        f"{_where(module, node)} imports {name}"
        for name, node, _ in _imports(module)
        if name.partition(".")[0] in ("sqlite3", "sqlite_utils")
    ]
    assert bad == []


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in _modules():
        edges = graph.setdefault(module, set())
        for name, _, _ in _imports(module):
            while name and name not in _modules():
                name = name.rpartition(".")[0]  # an attribute of a module
            # Importing a parent package runs its __init__: package structure, not a cycle.
            if name and name != module and not _in(module, name):
                edges.add(name)
    return graph


def test_there_is_no_import_cycle() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                cycles.append(path[path.index(child) :] + [child])
            elif child not in state:
                visit(child)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert [" -> ".join(cycle) for cycle in cycles] == []


def test_the_rules_see_the_imports_they_judge() -> None:
    # Guards the reader itself: rules over an empty import list would pass vacuously.
    assert ("executor.model.graph", True) in {
        (name, True) for name, _, _ in _imports("executor.policy.schedule")
    }
    assert any(name == "subprocess" for name, _, _ in _imports("executor.worker.bundle"))
    assert "executor.runs.start" in _graph()["executor.runs.drive"]


def test_every_module_stays_under_500_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in _modules().values()
        if (n := len(path.read_text().splitlines())) >= 500
    }
    assert long == {}
