"""The event log's kinds: one EventKind per kind written, the strings the README lists."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

from pixverse_tracker.rules.events import EventKind
from pixverse_tracker.rules.row import EventSpec

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p for folder in ("worker", "models", "migrations") for p in (ROOT / folder).rglob("*.py")
)


def test_the_stored_strings_are_the_ones_the_tracker_always_wrote() -> None:
    assert {k.value for k in EventKind} == {
        "enqueued",
        "retracked",
        "status",
        "done",
        "abandoned",
        "error",
        "anomaly",
        "hinted",
        "unscheduled",
    }
    assert all(k == k.value and str(k) == k.value for k in EventKind)


def test_the_readme_lists_every_kind_and_no_other() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"`video_events` holds the history \(([^)]*)\)", readme)
    assert found, "README: the sentence that lists the history's kinds"
    listed = re.findall(r"`([a-z_]+)`", found.group(1))
    assert sorted(listed) == sorted(k.value for k in EventKind)


def test_the_writer_takes_an_event_kind_by_its_signature() -> None:
    # mypy --strict holds every EventSpec(...) in the package to this annotation
    assert typing.get_type_hints(EventSpec)["kind"] is EventKind


def _event_spec_kinds(tree: ast.AST) -> list[ast.expr]:
    return [
        node.args[0] if node.args else next(k.value for k in node.keywords if k.arg == "kind")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "EventSpec"
    ]


def test_every_kind_the_code_writes_is_a_member() -> None:
    written: set[str] = set()
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for kind in _event_spec_kinds(ast.parse(text)):
            # EventKind.X, never a string: a kind nobody listed cannot be written
            assert isinstance(kind, ast.Attribute), f"{path}: {ast.unparse(kind)}"
            assert isinstance(kind.value, ast.Name) and kind.value.id == "EventKind", path
            written.add(EventKind[kind.attr].value)
        # SQL written by hand names its kind from the enum too
        for statement in re.findall(r"INSERT INTO video_events[^;]*?FROM", text):
            assert "EventKind." in statement, f"{path}: {statement}"
    assert written | {EventKind.ENQUEUED.value} == {k.value for k in EventKind}
