"""videos.started_at and videos.list_missed_at, for the adaptive schedule and the list endpoint.

``started_at`` is when the upstream was first seen generating the video: the time from there
to done is the generation time the schedule learns from. ``list_missed_at`` is when a read of
the account's list last failed to show the id (or failed): such an id is polled by its own
request for a while instead of waiting for pages that do not hold it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VIEW = (
    "CREATE VIEW completed_videos AS SELECT * FROM videos WHERE state = 'done' AND status_code = 1"
)


def upgrade() -> None:
    # The view is SELECT *, frozen to the columns of its creation: rebuilt to include the new.
    op.execute("DROP VIEW completed_videos")
    with op.batch_alter_table("videos") as batch:
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("list_missed_at", sa.DateTime(timezone=True)))
    op.execute(_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW completed_videos")
    with op.batch_alter_table("videos") as batch:
        batch.drop_column("list_missed_at")
        batch.drop_column("started_at")
    op.execute(_VIEW)
