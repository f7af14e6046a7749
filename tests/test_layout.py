"""The layout shows the process model: each folder of ``corral/`` is one part, and imports
only point down the order below (docs/architecture.md, "The map").  No import circle either,
between modules or between parts."""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "corral")

# Highest first: a part may import the parts after it, never one before it.  "face" is the
# package itself, "base" its top-level helper modules.
ORDER = ["face", "cli", "dask", "api", "supervisor", "jobs", "net", "runtime", "plan", "cgroups", "oci",
         "nsenter", "base"]
BASE = {"errors", "record", "jsonlite", "procfs", "images", "logformat", "version"}


def part_of(module: str) -> str:
    """corral.runtime.prepare -> runtime; corral.errors -> base."""
    parts = module.split(".")
    if len(parts) == 1:
        return "face"  # corral/__init__.py: corral.Job, corral.Client... (imported lazily)
    return "base" if parts[1] in BASE else parts[1]


def modules() -> dict[str, str]:
    found = {}
    for dirpath, _dirs, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = path
    return found


def imports(module: str, path: str, known: set[str], typing: bool = False) -> set[str]:
    """corral modules that ``module`` imports (anywhere in it: lazy imports are arrows too),
    and with ``typing`` those under ``if TYPE_CHECKING:`` too."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out: set[str] = set()

    def visit(node, typing_only=False):
        if (isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
                and not typing):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("corral"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[:len(up) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base.startswith("corral"):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    out.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in out if m != module}


def import_graph(typing: bool) -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {m: {i for i in imports(m, p, known, typing) if i in known}
            for m, p in found.items()}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(typing=False)


def test_every_folder_is_a_known_part(graph):
    assert {part_of(m) for m in graph} <= set(ORDER), sorted({part_of(m) for m in graph})


def test_imports_point_down_only(graph):
    upward = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = part_of(module), part_of(target)
            if a != b and ORDER.index(b) < ORDER.index(a):
                upward.append(f"{module} -> {target} ({a} imports {b})")
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("typing", [False, True], ids=["run-time", "with-type-hints"])
def test_no_import_circles(typing):
    """Among modules (a lazy import counts: it is a dependency all the same; and a type
    hint's import makes a circle of its own for a reader and a type checker)."""
    graph = import_graph(typing)
    state: dict[str, int] = {}
    circles = []

    def walk(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt == "corral":
                continue  # the package itself: its lazy attributes reach up by design
            if state.get(nxt) == 1:
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                walk(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [])
    assert not circles, "\n".join(circles)
