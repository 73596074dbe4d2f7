"""Completion callbacks to applications: videos.callback_url and the callback outbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OWED = "delivered_at IS NULL AND failed_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("videos") as batch:
        batch.add_column(sa.Column("callback_url", sa.Text()))
    op.create_table(
        "callback_outbox",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("video_id", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("next_attempt_at", TS),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_status", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("delivered_at", TS),
        sa.Column("failed_at", TS),
        sa.Column("claim_token", sa.String(36)),
        sa.ForeignKeyConstraint(
            ["video_id"],
            ["videos.video_id"],
            name=op.f("fk_callback_outbox_video_id_videos"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_outbox")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_callback_outbox_idempotency_key")),
    )
    op.create_index(op.f("ix_callback_outbox_video_id"), "callback_outbox", ["video_id"])
    op.create_index(
        "ix_callback_outbox_due",
        "callback_outbox",
        ["next_attempt_at"],
        postgresql_where=sa.text(OWED),
        sqlite_where=sa.text(OWED),
    )
    # The view was created with SELECT *: recreate it so it shows the new column too.
    op.execute("DROP VIEW completed_videos")
    op.execute(
        "CREATE VIEW completed_videos AS "
        "SELECT * FROM videos WHERE state = 'done' AND status_code = 1"
    )


def downgrade() -> None:
    op.execute("DROP VIEW completed_videos")
    op.drop_index("ix_callback_outbox_due", table_name="callback_outbox")
    op.drop_index(op.f("ix_callback_outbox_video_id"), table_name="callback_outbox")
    op.drop_table("callback_outbox")
    with op.batch_alter_table("videos") as batch:
        batch.drop_column("callback_url")
    op.execute(
        "CREATE VIEW completed_videos AS "
        "SELECT * FROM videos WHERE state = 'done' AND status_code = 1"
    )
