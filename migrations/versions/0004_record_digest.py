"""videos.record_sha: a digest of the stored record, so an unchanged answer rewrites nothing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("videos") as batch:
        batch.add_column(sa.Column("record_sha", sa.String(64)))
    # completed_videos is SELECT *: recreate it so it shows the new column too
    op.execute("DROP VIEW completed_videos")
    op.execute(
        "CREATE VIEW completed_videos AS "
        "SELECT * FROM videos WHERE state = 'done' AND status_code = 1"
    )


def downgrade() -> None:
    op.execute("DROP VIEW completed_videos")
    with op.batch_alter_table("videos") as batch:
        batch.drop_column("record_sha")
    op.execute(
        "CREATE VIEW completed_videos AS "
        "SELECT * FROM videos WHERE state = 'done' AND status_code = 1"
    )
