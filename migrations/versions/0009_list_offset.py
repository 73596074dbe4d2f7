"""videos.list_offset: the list page that last showed a pending video.

A burst of a thousand videos in one account fills 25 pages of its list. With the offset of
each id's page known, a claim reads exactly the pages that hold the ids it asks about, one
request each and side by side, instead of a chain from the first page (or fetches by id once
the chain ends). Nullable: unknown until a list read shows the id.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VIEW = (
    "CREATE VIEW completed_videos AS SELECT * FROM videos WHERE state = 'done' AND status_code = 1"
)


def upgrade() -> None:
    # The view is SELECT *, frozen to the columns of its creation: rebuilt to include the new.
    op.execute("DROP VIEW completed_videos")
    with op.batch_alter_table("videos") as batch:
        batch.add_column(sa.Column("list_offset", sa.Integer()))
    op.execute(_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW completed_videos")
    with op.batch_alter_table("videos") as batch:
        batch.drop_column("list_offset")
    op.execute(_VIEW)
