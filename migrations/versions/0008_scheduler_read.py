"""The token-wide scheduler read: videos.scheduler_seen_at and the read's state in tracker_control.

``GET /v2/pixverse/scheduler/`` lists every job started through the API that is still
executing. A pending row it lists gets ``scheduler_seen_at``; a later read without it means the
video has just finished, and it is fetched at once. The partial index holds only the pending
rows the scheduler has listed (the jobs executing now), so a read finds the ones that left it
without looking at the rest of the table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VIEW = (
    "CREATE VIEW completed_videos AS SELECT * FROM videos WHERE state = 'done' AND status_code = 1"
)
_SCHEDULED = "state = 'pending' AND scheduler_seen_at IS NOT NULL"


def upgrade() -> None:
    # The view is SELECT *, frozen to the columns of its creation: rebuilt to include the new.
    op.execute("DROP VIEW completed_videos")
    with op.batch_alter_table("videos") as batch:
        batch.add_column(sa.Column("scheduler_seen_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_videos_scheduled",
        "videos",
        ["video_id"],
        postgresql_where=sa.text(_SCHEDULED),
        sqlite_where=sa.text(_SCHEDULED),
    )
    op.execute(_VIEW)
    with op.batch_alter_table("tracker_control") as batch:
        batch.add_column(sa.Column("scheduler_read_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("scheduler_ok_at", sa.DateTime(timezone=True)))
        batch.add_column(
            sa.Column("scheduler_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("scheduler_error", sa.Text()))
        batch.add_column(sa.Column("scheduler_executing", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("tracker_control") as batch:
        for column in (
            "scheduler_executing",
            "scheduler_error",
            "scheduler_failures",
            "scheduler_ok_at",
            "scheduler_read_at",
        ):
            batch.drop_column(column)
    op.execute("DROP VIEW completed_videos")
    op.drop_index("ix_videos_scheduled", table_name="videos")
    with op.batch_alter_table("videos") as batch:
        batch.drop_column("scheduler_seen_at")
    op.execute(_VIEW)
