"""Hot-path SQL of the event store, written out so it is read as SQL, not guessed from ORM calls.

Sequences: a publish advances `events_topics.last_sequence` with one
`UPDATE ... RETURNING` before it inserts. On PostgreSQL that UPDATE holds the
topic row's lock until the transaction ends, so publishers of one topic take
turns: each one's sequences follow the previous one's, and they become
visible in commit order with no gaps. (Two publishes of the same message id
take turns the same way, so the second always sees the first.) SQLite has a
single writer, and the UPDATE being the transaction's first statement takes
the write lock at once, so the same holds there.

Reservations: on PostgreSQL a reserve is one `UPDATE ... WHERE sequence =
ANY(ARRAY(SELECT ... FOR UPDATE SKIP LOCKED LIMIT n))`, so concurrent
reservers never wait on each other's rows and never take the same event.
SQLite runs the same statement without row locks (one writer at a time).

Every write transaction of the store starts with a write statement, so on
SQLite it takes the write lock at its start and never has to upgrade a read
snapshot (which fails with SQLITE_BUSY when two processes share the file).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.sql.expression import TextualSelect

from conveyor_events.store.tables import events

# Advance a topic's last sequence by :n; returns the new value (no row: the topic is unknown).
ADVANCE_SEQUENCE = text("""
    UPDATE events_topics SET last_sequence = last_sequence + CAST(:n AS BIGINT)
    WHERE namespace = :ns AND topic = :topic
    RETURNING last_sequence
""")

# Hand back sequences advanced but not used (message ids found already published).
# Only ever run by the transaction that holds the topic row, right after ADVANCE_SEQUENCE.
SET_SEQUENCE = text("""
    UPDATE events_topics SET last_sequence = CAST(:last AS BIGINT)
    WHERE namespace = :ns AND topic = :topic
""")

# Columns of a new event that differ per event, bound as arrays by INSERT_EVENTS_POSTGRES.
INSERTED_COLUMNS = ("sequence", "message_id", "title", "payload", "content_type", "correlation_id")

# Insert a batch of new PENDING events of one topic in one statement: one array per
# column, so PostgreSQL plans and runs one INSERT instead of one per row.
INSERT_EVENTS_POSTGRES = text("""
    INSERT INTO events_events
        (namespace, topic, sequence, message_id, title, payload, content_type,
         correlation_id, status, published_at)
    SELECT :ns, :topic, v.sequence, v.message_id, v.title, v.payload, v.content_type,
           v.correlation_id, 'PENDING', CAST(:now AS BIGINT)
    FROM unnest(
        CAST(:sequence AS bigint[]), CAST(:message_id AS text[]), CAST(:title AS text[]),
        CAST(:payload AS bytea[]), CAST(:content_type AS text[]),
        CAST(:correlation_id AS text[])
    ) AS v(sequence, message_id, title, payload, content_type, correlation_id)
""")

# Events of a topic already published under some of `ids` (a publish's idempotency check).
# Written as a join from the ids so that each is one probe of the unique
# (namespace, topic, message_id) index. As `message_id IN (...)`, a young topic's
# table without statistics yet made the planner walk the (namespace, topic) prefix
# of the status index and filter every event of the topic: O(topic size) per batch,
# most of PostgreSQL's CPU in the publish benchmark.
PUBLISHED_BY_MESSAGE_ID_POSTGRES = text("""
    SELECT e.* FROM unnest(CAST(:ids AS text[])) AS m(id)
    JOIN events_events e
      ON e.namespace = :ns AND e.topic = :topic AND e.message_id = m.id
""")

_RESERVE_SET = """
    status = 'RESERVED', reserved_by = :run, reserved_at = CAST(:now AS BIGINT)
"""

_OLDEST_PENDING = """
    SELECT sequence FROM events_events
    WHERE namespace = :ns AND topic = :topic AND status = 'PENDING'
    ORDER BY sequence
    LIMIT :limit
"""


def _typed(sql: str) -> TextualSelect:
    return text(sql).columns(*events.columns)


# Reserve the :limit oldest pending events of a topic for run :run. The picked
# sequences become one array (an InitPlan run once), so the UPDATE finds its rows
# through the primary key however the planner misjudges the subquery's size.
RESERVE_POSTGRES = _typed(f"""
    UPDATE events_events SET {_RESERVE_SET}
    WHERE namespace = :ns AND topic = :topic AND status = 'PENDING'
      AND sequence = ANY(ARRAY({_OLDEST_PENDING} FOR UPDATE SKIP LOCKED))
    RETURNING *
""")

RESERVE_SQLITE = _typed(f"""
    UPDATE events_events SET {_RESERVE_SET}
    WHERE namespace = :ns AND topic = :topic AND sequence IN ({_OLDEST_PENDING})
    RETURNING *
""")
