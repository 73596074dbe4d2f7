"""TRACKER_DB_SCHEMA: the Postgres schema the tracker's objects live in (parsing only, no I/O)."""

from __future__ import annotations

import pytest

from pixverse_tracker.settings import SettingsError, load

PG = "postgresql://tracker@db.internal/app"


def test_without_the_setting_the_tracker_uses_the_roles_default_schema() -> None:
    assert load({"DATABASE_URL": PG}).db_schema is None
    assert load({"DATABASE_URL": PG, "TRACKER_DB_SCHEMA": "  "}).db_schema is None


@pytest.mark.parametrize("name", ["pixverse", "tracker_2", "_private", "public"])
def test_a_lowercase_identifier_is_accepted(name: str) -> None:
    assert load({"DATABASE_URL": PG, "TRACKER_DB_SCHEMA": f" {name} "}).db_schema == name


@pytest.mark.parametrize("name", ["Tracker", "2fast", "my-schema", "a.b", 'x"; DROP', "pg_temp"])
def test_anything_else_is_refused_in_one_line_naming_the_variable(name: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load({"DATABASE_URL": PG, "TRACKER_DB_SCHEMA": name})
    message = str(caught.value)
    assert message.startswith(f"TRACKER_DB_SCHEMA={name!r} must be ")
    assert "\n" not in message


def test_a_schema_with_sqlite_is_refused_since_sqlite_has_none() -> None:
    for env in ({"DATABASE_URL": "sqlite:///t.db"}, {}):  # explicit, or the embedded default
        with pytest.raises(SettingsError, match="^TRACKER_DB_SCHEMA is for Postgres"):
            load({**env, "TRACKER_DB_SCHEMA": "pixverse"})
