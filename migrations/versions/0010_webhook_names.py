"""The outbound delivery is called "webhook": videos.webhook_url and the webhook outbox.

"Callback" meant two things: useapi.net's push to our receiver (inbound) and our POST to an
application (outbound). The outbound side is now "webhook" everywhere, its database names too:
``videos.callback_url`` becomes ``webhook_url``, ``callback_outbox`` becomes ``webhook_outbox``,
with its constraints, indexes and (Postgres) id sequence named as the naming convention now
generates them. Renames only: every row, owed delivery and grant stays where it was.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VIEW = (
    "CREATE VIEW completed_videos AS SELECT * FROM videos WHERE state = 'done' AND status_code = 1"
)
TS = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OWED = "delivered_at IS NULL AND failed_at IS NULL"


def _outbox(name: str) -> sa.Table:
    """The outbox as migration 0003 made it, every name spelt from ``name``."""
    table = f"{name}_outbox"
    return sa.Table(
        table,
        sa.MetaData(),
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
            name=f"fk_{table}_video_id_videos",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        sa.UniqueConstraint("idempotency_key", name=f"uq_{table}_idempotency_key"),
        sa.Index(f"ix_{table}_video_id", "video_id"),
        sa.Index(f"ix_{table}_due", "next_attempt_at", sqlite_where=sa.text(OWED)),
    )


def _rename(old: str, new: str) -> None:
    """Rename the url column and the outbox (``old`` and ``new`` are "callback" or "webhook")."""
    # The view is SELECT *, its column names frozen at its creation: rebuilt to show the new.
    op.execute("DROP VIEW completed_videos")
    # Renamed in place on both backends (SQLite 3.25+ has RENAME COLUMN): a batch rebuild of
    # videos would drop the parent of the events and the outbox, whose rows would cascade away.
    op.alter_column("videos", f"{old}_url", new_column_name=f"{new}_url")
    op.rename_table(f"{old}_outbox", f"{new}_outbox")
    table = f"{new}_outbox"
    if op.get_bind().dialect.name == "postgresql":
        # Names in the search_path (TRACKER_DB_SCHEMA's, when set): nothing is qualified here.
        op.execute(f"ALTER SEQUENCE {old}_outbox_id_seq RENAME TO {new}_outbox_id_seq")
        for prefix, suffix in (("pk", ""), ("fk", "_video_id_videos"), ("uq", "_idempotency_key")):
            op.execute(
                f"ALTER TABLE {table} RENAME CONSTRAINT "
                f"{prefix}_{old}_outbox{suffix} TO {prefix}_{new}_outbox{suffix}"
            )
        # The unique key's index and the primary key's follow their constraints; these two
        # indexes are the table's own.
        op.execute(f"ALTER INDEX ix_{old}_outbox_video_id RENAME TO ix_{new}_outbox_video_id")
        op.execute(f"ALTER INDEX ix_{old}_outbox_due RENAME TO ix_{new}_outbox_due")
    else:
        # SQLite renames nothing but tables and columns: the outbox is rebuilt from its full
        # definition under the new names (batch mode copies the rows over).
        with op.batch_alter_table(table, copy_from=_outbox(new), recreate="always"):
            pass
    op.execute(_VIEW)


def upgrade() -> None:
    _rename("callback", "webhook")


def downgrade() -> None:
    _rename("webhook", "callback")
