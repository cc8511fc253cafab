"""outbox delivery marker on the order history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 07:00:00.000000

`queue_work_order_events` becomes the outbox of the journal relay
(store/outbox.py): `journaled_at` is NULL until the relay has appended the
row to the event store's journal, and a partial index holds just those rows.

Rows that exist when this runs are undelivered too, so the relay journals the
whole history once (record ids are `queue/<seq>`, so that is safe to repeat).
On PostgreSQL the column is added without a rewrite; the index is built
inside the migration's transaction, which blocks writes to the table while
it builds: on a very large history, create it CONCURRENTLY by hand first.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNDELIVERED = sa.text("journaled_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("queue_work_order_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("journaled_at", sa.BigInteger(), nullable=True))
        batch_op.create_index(
            "ix_queue_work_order_events_undelivered",
            ["seq"],
            unique=False,
            postgresql_where=_UNDELIVERED,
            sqlite_where=_UNDELIVERED,
        )


def downgrade() -> None:
    with op.batch_alter_table("queue_work_order_events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_queue_work_order_events_undelivered",
            postgresql_where=_UNDELIVERED,
            sqlite_where=_UNDELIVERED,
        )
        batch_op.drop_column("journaled_at")
