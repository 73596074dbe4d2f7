"""Index video_events by time, so pruning old history does not scan the whole table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_video_events_at"), "video_events", ["at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_video_events_at"), table_name="video_events")
