"""videos.hinted_at: when a push last said the video may be finished.

A push that arrives while the row is being polled cannot move it (the poll's answer is on the
way), but that answer may predate the push; the apply step reads hinted_at and polls again at
once instead of backing off.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("videos") as batch:
        batch.add_column(sa.Column("hinted_at", sa.DateTime(timezone=True)))
    op.execute("DROP VIEW completed_videos")
    op.execute(
        "CREATE VIEW completed_videos AS "
        "SELECT * FROM videos WHERE state = 'done' AND status_code = 1"
    )


def downgrade() -> None:
    op.execute("DROP VIEW completed_videos")
    with op.batch_alter_table("videos") as batch:
        batch.drop_column("hinted_at")
    op.execute(
        "CREATE VIEW completed_videos AS "
        "SELECT * FROM videos WHERE state = 'done' AND status_code = 1"
    )
