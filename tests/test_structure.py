"""The shape of the source tree (docs/architecture.md): the Python import graph has no cycle and
keeps its layers (the OpenAI layer never imports model.py; model.py never imports the server or
the CLI), and no source file grows past 400 lines without saying why at its top.

Imports are read with `ast` (every import statement, also those inside functions: a lazy import
that hides a cycle is still a cycle); nothing is imported or run."""

from __future__ import annotations

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG_DIR = os.path.join(ROOT, "python", "gemma_cpp")
PKG = "gemma_cpp"
EXTENSIONS = {"gemma_cpp._core"}  # built modules (no .py file in a fresh checkout)
MAX_LINES = 400
# A longer file says so in its first lines, e.g. "over 400 lines: one table per ISA, kept together".
REASON = re.compile(r"over 400 lines\b.*\S", re.IGNORECASE)
SOURCE_EXT = (".py", ".c", ".cc", ".cpp", ".h", ".hpp", ".inc", ".cu", ".cuh")


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for every .py file of the package."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(PKG_DIR):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
        for f in sorted(filenames):
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), os.path.dirname(PKG_DIR))[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join(rel)] = os.path.join(dirpath, f)
    return out


MODULES = _modules()
KNOWN = set(MODULES) | EXTENSIONS


def _is_package(name: str) -> bool:
    return MODULES.get(name, "").endswith("__init__.py")


def _targets(name: str, node: ast.AST) -> list[str]:
    """The package modules an import statement in module `name` loads."""
    if isinstance(node, ast.Import):
        bases = [a.name for a in node.names]
        names: list[str] = []
    else:
        assert isinstance(node, ast.ImportFrom)
        if node.level:
            pkg = name if _is_package(name) else name.rpartition(".")[0]
            for _ in range(node.level - 1):
                pkg = pkg.rpartition(".")[0]
            base = f"{pkg}.{node.module}" if node.module else pkg
        else:
            base = node.module or ""
        bases, names = [base], [a.name for a in node.names]
    out = []
    for base in bases:
        if base != PKG and not base.startswith(PKG + "."):
            continue
        subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in KNOWN]
        if len(subs) < len(names) or not names:
            out.append(base)  # names that are attributes of `base` (or `import base`)
        out += subs
    return out


def _graph() -> dict[str, set[str]]:
    """module -> the modules its imports run, with the parent packages a submodule import runs
    (those outside the importer's own packages, which are already being imported)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        edges = set()
        own = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _targets(name, node):
                    assert t in KNOWN, f"{path}: imports {t}, which is not a module of the package"
                    edges.add(t)
                    parts = t.split(".")
                    edges |= {".".join(parts[:i]) for i in range(1, len(parts))} - own - {PKG}
        edges.discard(name)
        graph[name] = edges
    return graph


GRAPH = _graph()


def _reach(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for t in GRAPH.get(todo.pop(), ()):
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def _cycle() -> list[str] | None:
    """One import cycle (a list of modules, first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(GRAPH.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_import_graph_is_read():
    assert {"gemma_cpp.model", "gemma_cpp.generation", "gemma_cpp.openai.protocol", "gemma_cpp.openai.server",
            "gemma_cpp.cli", "gemma_cpp.cli.run"} <= set(GRAPH)
    assert "gemma_cpp.generation" in GRAPH["gemma_cpp.model"]
    assert "gemma_cpp.openai" in GRAPH["gemma_cpp.model"]  # a submodule import runs its package too


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("low", sorted(m for m in MODULES if m.startswith("gemma_cpp.openai")
                                       or m == "gemma_cpp.generation"))
def test_the_openai_layer_and_generation_never_import_the_model(low):
    """They work on any Model passed to them (so model.py can use them without a cycle)."""
    assert "gemma_cpp.model" not in _reach(low)
    assert "gemma_cpp.cli" not in _reach(low)


def test_the_model_never_imports_the_server_or_the_cli():
    reached = _reach("gemma_cpp.model")
    assert "gemma_cpp.openai.server" not in reached
    assert not any(m == "gemma_cpp.cli" or m.startswith("gemma_cpp.cli.") for m in reached)


def _source_files():
    for top in (PKG_DIR, os.path.join(ROOT, "csrc")):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for f in sorted(filenames):
                if f.endswith(SOURCE_EXT):
                    yield os.path.join(dirpath, f)


def test_no_long_file_without_a_reason():
    long = []
    for path in _source_files():
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
        if len(lines) > MAX_LINES and not any(REASON.search(line) for line in lines[:15]):
            long.append(f"{os.path.relpath(path, ROOT)} ({len(lines)} lines)")
    assert not long, (f"files over {MAX_LINES} lines without 'over {MAX_LINES} lines: <why>' in their first "
                      f"15 lines: {', '.join(long)}")
