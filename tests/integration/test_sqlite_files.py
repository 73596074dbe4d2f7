"""The embedded SQLite database on disk (issue 11): a private folder, private files, and a
folder someone else controls refused with one line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from pixverse_tracker.db.engines import make_engine
from pixverse_tracker.settings import SettingsError

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_something(url: str) -> dict[str, int]:
    """Open the database and write in WAL mode: the mode of each file in its folder meanwhile
    (SQLite removes its -wal and -shm files when the last connection closes)."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS t (a INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
            database = Path(str(engine.url.database))
            return {p.name: mode(p) for p in sorted(database.parent.iterdir())}
    finally:
        engine.dispose()


def test_a_new_database_gets_a_0700_folder_and_every_file_0600_even_under_a_lax_umask(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "data"
    old = os.umask(0o002)  # a common umask: group-writable files and folders
    try:
        files = write_something(f"sqlite:///{folder / 'tracker.db'}")
    finally:
        os.umask(old)
    assert mode(folder) == 0o700
    assert files == {"tracker.db": 0o600, "tracker.db-shm": 0o600, "tracker.db-wal": 0o600}


def test_database_files_left_readable_by_an_older_version_are_closed_to_0600(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    database = folder / "tracker.db"
    for path in (database, folder / "tracker.db-wal"):
        path.touch()
        path.chmod(0o644)
    make_engine(f"sqlite:///{database}").dispose()
    assert mode(database) == 0o600 and mode(folder / "tracker.db-wal") == 0o600
    assert mode(folder) == 0o755  # a folder that exists is the user's: checked, never changed


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_that_belongs_to_another_user_is_refused_with_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o755)
    os.chown(folder, NOBODY, NOBODY)
    with pytest.raises(SettingsError) as refused:
        make_engine(f"sqlite:///{folder / 'tracker.db'}")
    message = str(refused.value)
    assert "\n" not in message
    assert message == (
        f"the database folder {folder} belongs to another user (uid {NOBODY}, this is uid 0): "
        "set TRACKER_DATA_DIR (or the path in DATABASE_URL) to a folder of your own"
    )
    assert list(folder.iterdir()) == []  # nothing was created in it


def test_a_folder_writable_by_every_user_is_refused_but_one_writable_by_its_group_is_not(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # sticky, like /tmp: others still plant files that do not exist yet
    with pytest.raises(SettingsError, match=r"is writable by every user \(mode 1777\)"):
        make_engine(f"sqlite:///{shared / 'tracker.db'}")
    assert list(shared.iterdir()) == []

    grouped = tmp_path / "grouped"
    grouped.mkdir()
    grouped.chmod(0o775)
    assert write_something(f"sqlite:///{grouped / 'tracker.db'}")["tracker.db"] == 0o600
