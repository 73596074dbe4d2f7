"""The house rules of the package, read from the source (no imports, no I/O beyond reading it).

docs/architecture.md draws the rooms; these tests keep them true: no module over MAX_LINES, no
import cycle between modules, the rules pure, every room importing only the rooms it may, and
one installed name.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pixverse_tracker"

# About 400 lines is the aim (docs/architecture.md); past 450 a module holds more than one job.
MAX_LINES = 450

# Which rooms each room may import (its own always). Dependencies point inward: the faces
# (api, cli, jobs, web) use the service, which uses the rules, the SQL and the upstream client;
# the rules use nothing of the project's but each other. "__init__" is the package's own
# __init__, which offers the API at the top.
ALLOWED: dict[str, set[str]] = {
    "rules": set(),
    "logs": set(),
    "testing": set(),
    "models": {"rules"},
    "settings": {"rules"},
    "upstream": {"rules"},
    "db": {"models", "rules", "settings"},
    "migrations": {"db", "models", "settings"},
    "service": {"db", "logs", "models", "rules", "settings", "upstream"},
    "api": {"db", "models", "rules", "service", "settings"},
    # The faces (web, cli) reach the database through the service (service.database,
    # .reading, .hints, .status), never db/ or models/ directly.
    "web": {"logs", "rules", "service", "settings"},
    "jobs": {"logs", "service", "settings", "web"},
    "cli": {"api", "jobs", "logs", "rules", "service", "settings", "testing", "web"},
    "__init__": {"api", "rules", "settings"},
}
# The libraries with I/O (or a framework) that the rules must never see.
IMPURE = {"sqlalchemy", "alembic", "celery", "kombu", "requests", "urllib3", "prometheus_client"}
# The repository's folders: importing one by its folder name would load a second copy.
FOLDER_NAMES = {"worker", "models", "migrations"}


def _setuptools() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        table = tomllib.load(f)["tool"]["setuptools"]
    assert isinstance(table, dict)
    return table


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def room(self) -> str:
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 else "__init__"

    def imports(self) -> Iterator[tuple[str, int]]:
        """(imported name, line) for every import, in functions and TYPE_CHECKING blocks too."""
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, node.lineno
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{self.path}:{node.lineno}: relative import"
                assert node.module is not None
                for alias in node.names:
                    yield f"{node.module}.{alias.name}", node.lineno


def _modules() -> dict[str, Module]:
    """Every module of the package, by dotted name, from pyproject's folder mapping."""
    mapping = _setuptools()["package-dir"]
    assert isinstance(mapping, dict)
    found: dict[str, Module] = {}
    # Longest package first: models/ is pixverse_tracker.models, not a folder of worker/.
    for package, folder in sorted(mapping.items(), key=lambda item: -len(item[0])):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            found.setdefault(name, Module(name, path, ast.parse(path.read_text(), str(path))))
    return found


MODULES = _modules()


def _resolve(imported: str) -> str | None:
    """The package module an import names (``from a import b`` is ``a.b`` when that is a
    module, else ``a``), or None for anything outside the package."""
    if imported.split(".")[0] != PACKAGE:
        return None
    while imported not in MODULES:
        imported = imported.rpartition(".")[0]
    return imported


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for module in MODULES.values():
        for imported, _ in module.imports():
            target = _resolve(imported)
            if target is not None and target != module.name:
                graph[module.name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_is_read_whole() -> None:
    # A guard for the tests below: they must see the rooms they judge.
    rooms = {module.room for module in MODULES.values()}
    assert rooms == set(ALLOWED), rooms ^ set(ALLOWED)
    assert f"{PACKAGE}.rules.decide" in MODULES and f"{PACKAGE}.models.video" in MODULES


def test_no_module_is_longer_than_the_limit() -> None:
    long = {
        str(module.path.relative_to(ROOT)): lines
        for module in MODULES.values()
        if (lines := len(module.path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: split along a real seam: {long}"


def test_no_two_modules_import_each_other_even_through_others() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    # The check above must be able to fail: a made-up graph with one cycle in it.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_rules_import_only_the_standard_library_and_each_other() -> None:
    stdlib = sys.stdlib_module_names
    found = [
        f"{module.path.relative_to(ROOT)}:{line}: {imported}"
        for module in MODULES.values()
        if module.room == "rules"
        for imported, line in module.imports()
        if not (
            imported.split(".")[0] in stdlib - {PACKAGE}
            or imported == "__future__.annotations"
            or imported.startswith(f"{PACKAGE}.rules.")
            or imported == f"{PACKAGE}.rules"
        )
    ]
    assert not found, "the rules are pure (no I/O, no framework, no other room): " + str(found)
    assert not IMPURE & stdlib


def test_every_room_imports_only_the_rooms_it_may() -> None:
    found = []
    for module in MODULES.values():
        for imported, line in module.imports():
            target = _resolve(imported)
            if target is None:
                continue
            room = MODULES[target].room
            if room != module.room and room not in ALLOWED[module.room]:
                where = f"{module.path.relative_to(ROOT)}:{line}"
                found.append(f"{where}: {module.room} imports {room} ({imported})")
    assert not found, "dependencies point inward (docs/architecture.md): " + "\n".join(found)


def test_the_package_itself_imports_nothing_from_its_top_level() -> None:
    # pixverse_tracker/__init__ offers the API to applications; a module of the package that
    # imported from it would run in a half-made package.
    found = [
        f"{module.path.relative_to(ROOT)}:{line}"
        for module in MODULES.values()
        for imported, line in module.imports()
        if _resolve(imported) == PACKAGE and module.name != PACKAGE
    ]
    assert not found


def test_nothing_imports_the_repositorys_folders_by_their_own_names() -> None:
    found = []
    for folder in ("worker", "models", "migrations", "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            module = Module(path.stem, path, ast.parse(path.read_text(), str(path)))
            for imported, line in module.imports():
                if imported.split(".")[0] in FOLDER_NAMES:
                    found.append(f"{path.relative_to(ROOT)}:{line}: {imported}")
    assert not found, f"import {PACKAGE}..., never the folders: {found}"


def test_every_folder_of_the_package_is_a_listed_package() -> None:
    listed = _setuptools()["packages"]
    assert isinstance(listed, list)
    folders = {name for name, module in MODULES.items() if module.path.name == "__init__.py"}
    assert folders == set(listed), "pyproject's [tool.setuptools] packages: " + str(
        folders ^ set(listed)
    )
