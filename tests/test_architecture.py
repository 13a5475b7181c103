"""The import structure of the packages, read from their source (nothing is imported or run).

Arrows point one way, ``jobs`` → ``training`` → ``ser_udfs``, and no module imports another that
imports it back, directly or round a longer loop, not even inside a function or under
``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ser_udfs", "training", "jobs")
#: Which project packages each package may import (besides itself).
ALLOWED = {"ser_udfs": set(), "training": {"ser_udfs"}, "jobs": {"ser_udfs", "training"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def imported_names(path: Path, name: str, is_package: bool) -> set[str]:
    """Every module name that ``path`` imports, anywhere in the file (absolute names)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (a name that is a symbol, not a module, is dropped)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = imported_names(path, name, path.name == "__init__.py")
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_walker_sees_function_local_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from training.bundle import load\n"
        "def f():\n    import ser_udfs.audio.decode\n    from . import sibling\n    from .other import thing\n"
    )
    found = imported_names(source, "jobs.m", False)
    assert {"training.bundle", "training.bundle.load", "ser_udfs.audio.decode", "jobs.sibling", "jobs.other"} <= found


def test_the_cycle_finder_finds_a_loop_of_three() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules() -> None:
    found = cycles(import_graph())
    assert not found, f"modules that import each other (directly or round a loop): {found}"


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_one_way(package: str) -> None:
    graph = import_graph()
    wrong = sorted(
        f"{source} imports {target}"
        for source, targets in graph.items() if source.split(".")[0] == package
        for target in targets
        if target.split(".")[0] != package and target.split(".")[0] not in ALLOWED[package]
    )
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package]) or 'itself'}: " + "; ".join(wrong)
