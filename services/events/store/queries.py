"""Hot-path SQL of the event store, written out so it is read as SQL, not guessed from ORM calls.

Sequences: a publish advances `events_topics.last_sequence` with an
`UPDATE ... RETURNING`. On PostgreSQL that UPDATE holds the topic row's lock
until the transaction ends, so publishers of one topic take turns: each one's
sequences follow the previous one's, and they become visible in commit order
with no gaps. SQLite has a single writer, and the UPDATE being the
transaction's first statement takes the write lock at once, so the same
holds there.

Publishing on PostgreSQL has two paths (store/writes.py):

* `PUBLISH_NEW_POSTGRES`, the usual one: one statement, run outside an
  explicit transaction, that advances the sequence and inserts every draft,
  looking nothing up. A message id the topic already holds makes the unique
  (namespace, topic, message_id) index refuse the insert, and the whole
  statement, sequence advance included, has no effect.
* then, and inside `Commit`, the careful path: `LOCK_TOPIC_POSTGRES` first,
  then `PUBLISH_POSTGRES`, which looks the message ids up, inserts only the
  new ones and advances the sequence by their number. Its snapshot is taken
  after the lock, so it sees every publish to the topic that committed
  before, and two publishes of one message id always find each other.

Planner traps. A topic younger than the table's statistics (a new table, or a
new topic in an old one) looks to the planner as if it held one row, so any
index starting with (namespace, topic) seems as good as any other. The
lookups below are written so that only the intended index can serve them:
the message-id probe is a seek in the unique index's own order, and the
reserve updates the rows it locked by their ctid. Written as a join on the
message ids, or as `sequence = ANY(...)`, they read every event (every pending
one) of such a topic through some index's (namespace, topic) prefix: 15-33 ms
per batch of 100 at 40,000 events (docs/benchmarks.md, "Event store").

Reservations: on PostgreSQL a reserve is one `UPDATE ... WHERE ctid =
ANY(ARRAY(SELECT ctid ... FOR UPDATE SKIP LOCKED LIMIT n))`, so concurrent
reservers never wait on each other's rows and never take the same event.
SQLite runs the same selection without row locks (one writer at a time).

Every write transaction of the store starts with a write statement, so on
SQLite it takes the write lock at its start and never has to upgrade a read
snapshot (which fails with SQLITE_BUSY when two processes share the file).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.sql.expression import TextualSelect

from conveyor_events.store.tables import events

# SQLite's publish: advance a topic's last sequence by :n; returns the new value (no
# row: the topic is unknown).
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

# Columns of a draft, bound as one array each (in the batch's order, message ids distinct).
DRAFT_COLUMNS = ("message_id", "title", "payload", "content_type", "correlation_id")

_DRAFTS = """
    unnest(CAST(:message_id AS text[]), CAST(:title AS text[]), CAST(:payload AS bytea[]),
           CAST(:content_type AS text[]), CAST(:correlation_id AS text[]))
        WITH ORDINALITY AS d(message_id, title, payload, content_type, correlation_id, n)
"""

_INSERT = """
    INSERT INTO events_events
        (namespace, topic, sequence, message_id, title, payload, content_type,
         correlation_id, status, published_at)
"""

# Publish drafts none of which the topic holds, in one statement: advance the
# sequence by the batch size :n and insert the batch, the i-th draft taking
# base + i. Returns `base`; no row when the topic is unknown. A message id
# already published fails the statement with a unique violation (nothing is
# stored), and the caller takes the careful path.
PUBLISH_NEW_POSTGRES = text(f"""
    WITH advanced AS (
        UPDATE events_topics
        SET last_sequence = last_sequence + CAST(:n AS BIGINT)
        WHERE namespace = :ns AND topic = :topic
        RETURNING last_sequence - CAST(:n AS BIGINT) AS base
    ),
    inserted AS (
        {_INSERT}
        SELECT :ns, :topic, a.base + d.n, d.message_id, d.title, d.payload, d.content_type,
               d.correlation_id, 'PENDING', CAST(:now AS BIGINT)
        FROM advanced a CROSS JOIN {_DRAFTS}
    )
    SELECT base FROM advanced
""")

# Take the topic row's lock (the lock a sequence advance takes) before
# PUBLISH_POSTGRES, so that statement's snapshot sees every earlier publish.
LOCK_TOPIC_POSTGRES = text("""
    SELECT last_sequence FROM events_topics
    WHERE namespace = :ns AND topic = :topic
    FOR NO KEY UPDATE
""")

# Publish drafts of which the topic may hold some, under the topic lock
# (LOCK_TOPIC_POSTGRES, same transaction). `existing` probes the unique index
# once per message id: the first entry at or after (ns, topic, id) in the
# index's order, which is the event when it exists. Only that index yields
# this order, so no topic-wide scan can win on cost. New drafts take base + 1,
# base + 2, ... in batch order, and the sequence advances by their number.
# Returns one row per existing event (`base` and the event), or a single row
# with only `base` when none existed.
PUBLISH_POSTGRES = text(f"""
    WITH drafts AS (SELECT * FROM {_DRAFTS}),
    existing AS MATERIALIZED (
        SELECT e.* FROM drafts d
        CROSS JOIN LATERAL (
            SELECT * FROM events_events x
            WHERE (x.namespace, x.topic, x.message_id) >= (:ns, :topic, d.message_id)
            ORDER BY x.namespace, x.topic, x.message_id
            LIMIT 1
        ) AS e
        WHERE e.namespace = :ns AND e.topic = :topic AND e.message_id = d.message_id
    ),
    fresh AS (
        SELECT d.*, row_number() OVER (ORDER BY d.n) AS rank FROM drafts d
        WHERE d.message_id NOT IN (SELECT message_id FROM existing)
    ),
    counted AS (SELECT count(*) AS fresh FROM fresh),
    advanced AS (
        UPDATE events_topics t SET last_sequence = t.last_sequence + c.fresh
        FROM counted c
        WHERE t.namespace = :ns AND t.topic = :topic
        RETURNING t.last_sequence - c.fresh AS base
    ),
    inserted AS (
        {_INSERT}
        SELECT :ns, :topic, a.base + f.rank, f.message_id, f.title, f.payload, f.content_type,
               f.correlation_id, 'PENDING', CAST(:now AS BIGINT)
        FROM advanced a CROSS JOIN fresh f
    )
    SELECT a.base, e.* FROM advanced a LEFT JOIN existing e ON true
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


# Reserve the :limit oldest pending events of a topic for run :run. The rows
# picked and locked become one array of ctids (an InitPlan run once), and the
# UPDATE fetches exactly those tuples (a TID scan). The lock keeps each tuple
# as picked until the transaction ends, so it needs no second status check;
# and no index is left for the planner to misjudge (as `sequence = ANY(...)`
# it walked every pending event of a young topic through the status index).
RESERVE_POSTGRES = _typed(f"""
    UPDATE events_events SET {_RESERVE_SET}
    WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM events_events
        WHERE namespace = :ns AND topic = :topic AND status = 'PENDING'
        ORDER BY sequence
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING *
""")

RESERVE_SQLITE = _typed(f"""
    UPDATE events_events SET {_RESERVE_SET}
    WHERE namespace = :ns AND topic = :topic AND sequence IN ({_OLDEST_PENDING})
    RETURNING *
""")
