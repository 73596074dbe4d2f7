"""Cheaper row updates: the done_at index holds finished rows only; wide rows shed their values.

Every poll updates its row twice (the claim, then the answer). Postgres writes a new version of
the whole row for each, and an entry in every index whose predicate the row matches:

- ``ix_videos_done_at`` covered all rows, so each update of a pending row wrote an entry that
  no query reads (every query on it asks for finished rows). It now holds rows with a
  ``done_at`` only; queries with ``done_at >= ...`` or ``ORDER BY done_at`` on done rows use it
  as before;
- ``toast_tuple_target = 128`` (Postgres only): once a row is wider than Postgres's toast
  threshold (about 2 KB: a large record, long prompts), its long values are compressed and
  moved out of the row until it is under 128 bytes of them, instead of just under 2 KB; every
  later update then copies a pointer, not the record. Rows narrower than the threshold are
  not toasted at all, whatever the target (measured in docs/performance.md).

The index is rebuilt in the migration's transaction, which blocks writes to ``videos`` for as
long as that takes (about a second per million rows here); run ``migrate`` with the workers
stopped on a large table.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FINISHED = "done_at IS NOT NULL"


def upgrade() -> None:
    op.drop_index("ix_videos_done_at", table_name="videos")
    op.create_index(
        "ix_videos_done_at",
        "videos",
        ["done_at", "video_id"],
        postgresql_where=sa.text(_FINISHED),
        sqlite_where=sa.text(_FINISHED),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE videos SET (toast_tuple_target = 128)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE videos RESET (toast_tuple_target)")
    op.drop_index("ix_videos_done_at", table_name="videos")
    op.create_index("ix_videos_done_at", "videos", ["done_at", "video_id"])
