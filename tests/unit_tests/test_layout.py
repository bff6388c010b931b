"""The package's shape: no import circle, no library file past 450 lines.

The import graph is read from the source (``ast``), so it holds for every import a module
makes: at the top, under ``if TYPE_CHECKING:`` and inside functions (a lazy import is a
dependency too, and a circle through one is still a circle a reader has to untangle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "langchain_seed"
MAX_LINES = 450
"""A file past this many lines is a sign to split it (the design's section 3)."""
LONG_FILES_ALLOWED: dict[str, str] = {}
"""Library files allowed past :data:`MAX_LINES` for now, with the reason (none today)."""


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``package``."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in modules}


def import_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Every set of modules that import each other in a circle (Tarjan's algorithm)."""
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for other in graph[name]:
            if other not in index:
                visit(other)
                low[name] = min(low[name], low[other])
            elif other in stack:
                low[name] = min(low[name], index[other])
        if low[name] == index[name]:
            component = []
            while (member := stack.pop()) != name:
                component.append(member)
            if component:
                cycles.append(sorted([name, *component]))

    for name in graph:
        if name not in index:
            visit(name)
    return cycles


def test_no_module_of_the_package_imports_itself_back_through_others():
    assert import_cycles(module_files()) == []


def test_the_cycle_check_finds_a_circle_through_a_lazy_or_type_checking_import(tmp_path):
    package = tmp_path / "langchain_seed"
    (package / "engine").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "engine" / "__init__.py").write_text("")
    (package / "engine" / "a.py").write_text("from langchain_seed.engine import b\n")
    (package / "engine" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from langchain_seed.engine.c import C\n"
    )
    (package / "engine" / "c.py").write_text(
        "def f():\n    from langchain_seed.engine.a import x\n"
    )
    (package / "engine" / "d.py").write_text("import langchain_seed.engine.a\n")
    cycles = import_cycles(module_files(package))
    assert cycles == [
        ["langchain_seed.engine.a", "langchain_seed.engine.b", "langchain_seed.engine.c"]
    ]


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_no_library_file_is_longer_than_450_lines(path):
    name = path.relative_to(PACKAGE).as_posix()
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if name in LONG_FILES_ALLOWED:
        pytest.skip(f"{name}: {lines} lines allowed ({LONG_FILES_ALLOWED[name]})")
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by concept"
