"""Message notifications: at most one unread ``message`` notification per (user, conversation).

A partial unique index on ``notifications (user_id, (payload ->> 'conversation_id')::bigint)``
for unread ``message`` rows. The realtime nodes upsert into it (``ON CONFLICT ... DO UPDATE``,
the count grows) so two nodes notifying the same recipient at once coalesce into one row, and
read receipts and the REST read mark find that row by key. Read rows leave the index, so the
next offline message starts a new notification. Nothing else changes: ``kind`` and ``payload``
already hold it (``{"user_id": sender, "conversation_id", "count", "seq"}``).

Revision ID: 0006_message_notifications
Revises: 0005_insert_mostly_write_path
Create Date: 2026-12-03 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006_message_notifications"
# Re-point at the write path's 0005 when the branches merge (0005 touches other tables only).
down_revision: str | None = "0005_insert_mostly_write_path"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "uq_notifications_unread_message",
        "notifications",
        ["user_id", sa.text("((payload ->> 'conversation_id')::bigint)")],
        unique=True,
        postgresql_where=sa.text("kind = 'message' AND read_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_notifications_unread_message", table_name="notifications")
