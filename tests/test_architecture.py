"""The tree's rules (ARCHITECTURE.md), checked on the source:

* no import cycle between the project's modules (every import counts, including the lazy ones
  inside functions; only ``if TYPE_CHECKING:`` blocks are left out);
* fronts import the engine, never the reverse;
* the torch-free modules import without torch;
* every module opens with a docstring, and none grows past ~600 lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "clients", "kernels")
MAX_LINES = 650  # "~600": a little slack, so a docstring edit does not fail the suite

# Modules that must import with torch unavailable.
TORCH_FREE = ("engine.errors", "engine.pcm", "engine.runtime.request", "engine.runtime.scheduler",
              "engine.runtime.windows", "engine.text.chunker", "clients.protocol",
              "clients.cli_common", "clients.client")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path) -> set[str]:
    """Project modules ``name`` imports (resolved to the longest known module name)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    add(a.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                for a in child.names:  # "from pkg import module" imports the module
                    full = f"{mod}.{a.name}"
                    add(full if full in MODULES else mod)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_graph_sees_the_tree() -> None:
    assert len(MODULES) > 40
    assert "engine.runtime.runner" in GRAPH["engine.runtime.engine"]
    assert "engine.runtime.request" in GRAPH["clients.protocol"]


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components over the import graph: all of size one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in GRAPH:
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_engine_never_imports_the_fronts() -> None:
    bad = {m: sorted(d for d in deps if d.startswith("clients"))
           for m, deps in GRAPH.items() if m.startswith(("engine", "kernels"))}
    assert not {m: d for m, d in bad.items() if d}


@pytest.mark.parametrize("module", TORCH_FREE)
def test_torch_free_modules_import_without_torch(module: str) -> None:
    code = ("import sys\n"
            "sys.modules['torch'] = None  # any import of torch now fails\n"
            f"import {module}\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_modules_say_what_they_own_and_stay_small() -> None:
    missing = [n for n, p in MODULES.items()
               if ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) is None]
    assert not missing, f"modules without an opening docstring: {missing}"
    long = {n: c for n, p in MODULES.items()
            if (c := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
