"""drop ix_events_events_pending

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 12:00:00.000000

`ix_events_events_pending` (namespace, topic, sequence) WHERE status =
'PENDING' duplicated the prefix (namespace, topic, 'PENDING') of
`ix_events_events_status` (namespace, topic, status, sequence), which serves
the same lookups (oldest pending events of a topic, in sequence order), and
every published event paid for an entry in both. Dropping an index takes a
brief ACCESS EXCLUSIVE lock on the table; the downgrade rebuilds it inside
the migration's transaction, blocking writes while it builds.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("status = 'PENDING'")


def upgrade() -> None:
    with op.batch_alter_table("events_events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_events_events_pending", postgresql_where=_PENDING, sqlite_where=_PENDING
        )


def downgrade() -> None:
    with op.batch_alter_table("events_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_events_pending",
            ["namespace", "topic", "sequence"],
            unique=False,
            postgresql_where=_PENDING,
            sqlite_where=_PENDING,
        )
