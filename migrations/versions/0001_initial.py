"""The initial schema: videos, video_events, completed_videos, the control row and poll counts.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
JSONDOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "videos",
        sa.Column("video_id", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("status_name", sa.Text()),
        sa.Column("status_final", sa.Boolean()),
        sa.Column("record", JSONDOC),
        sa.Column("url", sa.Text()),
        sa.Column("first_frame", sa.Text()),
        sa.Column("prompt", sa.Text()),
        sa.Column("model", sa.Text()),
        sa.Column("duration", sa.Float()),
        sa.Column("output_width", sa.Integer()),
        sa.Column("output_height", sa.Integer()),
        sa.Column("upstream_created_at", TS),
        sa.Column("enqueued_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("last_polled_at", TS),
        sa.Column("next_poll_at", TS),
        sa.Column("done_at", TS),
        sa.Column("poll_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_http_status", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("abandon_reason", sa.Text()),
        sa.Column("claimed_until", TS),
        sa.Column("claim_token", sa.String(36)),
        sa.CheckConstraint(
            "state IN ('pending', 'done', 'abandoned')", name=op.f("ck_videos_state_known")
        ),
        sa.PrimaryKeyConstraint("video_id", name=op.f("pk_videos")),
    )
    # The dispatch query reads only due pending rows: a partial index keeps it small and fast
    # however many finished rows pile up.
    op.create_index(
        "ix_videos_due",
        "videos",
        ["next_poll_at"],
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )
    op.create_index("ix_videos_done_at", "videos", ["done_at", "video_id"])

    op.create_table(
        "video_events",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("video_id", sa.Text(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("http_status", sa.Integer()),
        sa.Column("status_code", sa.Integer()),
        sa.Column("status_name", sa.Text()),
        sa.Column("message", sa.Text()),
        sa.ForeignKeyConstraint(
            ["video_id"],
            ["videos.video_id"],
            name=op.f("fk_video_events_video_id_videos"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_video_events")),
    )
    op.create_index(op.f("ix_video_events_video_id"), "video_events", ["video_id"])

    op.create_table(
        "tracker_control",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("next_slot_at", TS),
        sa.Column("rate_factor", sa.Float(), server_default=sa.text("1"), nullable=False),
        sa.Column("rate_factor_at", TS),
        sa.Column("throttled_until", TS),
        sa.Column("auth_paused_until", TS),
        sa.Column("auth_failing", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("auth_failed_at", TS),
        sa.Column("auth_error", sa.Text()),
        sa.Column("last_dispatch_at", TS),
        sa.CheckConstraint("id = 1", name=op.f("ck_tracker_control_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracker_control")),
    )
    op.execute("INSERT INTO tracker_control (id, rate_factor, auth_failing) VALUES (1, 1, false)")

    op.create_table(
        "poll_minutes",
        sa.Column("minute", TS, nullable=False),
        sa.Column("polls", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("errors", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("rate_limited", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("unauthorized", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("minute", name=op.f("pk_poll_minutes")),
    )

    op.execute(
        "CREATE VIEW completed_videos AS "
        "SELECT * FROM videos WHERE state = 'done' AND status_code = 1"
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS completed_videos")
    op.drop_table("poll_minutes")
    op.drop_table("tracker_control")
    op.drop_index(op.f("ix_video_events_video_id"), table_name="video_events")
    op.drop_table("video_events")
    op.drop_index("ix_videos_done_at", table_name="videos")
    op.drop_index("ix_videos_due", table_name="videos")
    op.drop_table("videos")
