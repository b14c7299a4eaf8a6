"""``messages`` partitioned by HASH (conversation_id) into 4 partitions; the resend key names it.

Every message of every conversation was in one heap with three B-trees. Now the table is
declaratively partitioned on ``conversation_id``: each conversation's rows live in one of
the :data:`PARTITIONS` partitions (``messages_p0`` .. ``messages_p3``), each with its own heap,
indexes, vacuum and statistics, and every reader and the writer name ``conversation_id`` so
PostgreSQL scans exactly one partition (tests/realtime/test_partition_plans.py checks the plans).

Why 4: every statement of a node runs on a generic plan (``realtime/store.py``), and a generic
plan's ``Append`` over the partitions, pruned at run time per row (the conversation comes from
the batch's arrays), starts up and locks every partition's index scan on each call; past 16
relations a transaction's locks also leave PostgreSQL's fast path. That fixed cost per call
grows with the count (4, 8 and 16 measured, docs/BENCHMARKS.md, "Partitioned messages"), so the
table starts with 4: the keys, the pruned plans and the partition-wise vacuum are in place, and
the count can grow with the table. A hash partition splits without touching the others: detach
``messages_pN``, create the modulus-8 partitions for remainders N and N + 4, copy its rows into
the parent.

So the function (below) reads ``messages`` as little as it can: once per call for the sends
(each conversation's top seq, on its first row only), and never the resend key unless it is
called with ``probe``. Resends are rare: without ``probe`` the INSERT's unique index is the
check, a batch holding a resend fails with ``unique_violation`` (storing nothing, the call being
its own transaction), and the node calls again with ``probe``, which looks each key up first. At
4 partitions that costs PostgreSQL no more per message than 0006's plain table at a paced 3,000
msg/s, and less in large batches (docs/BENCHMARKS.md).

A unique index of a partitioned table must contain the partition key, so the keys become:

- primary key ``(conversation_id, seq)``, unchanged;
- the idempotency key ``uq_messages_conversation_sender_cmid`` ``(conversation_id, sender_id,
  cmid)`` instead of ``(sender_id, cmid)``: a client's resend always names the same
  conversation, so the same ``cmid`` from the same sender in another conversation is a new
  message; a resend with another body or kind is still ``CMID_CONFLICT``. ``cmid`` is
  ``COLLATE "C"``: an opaque client id compared byte by byte (the database's ``C.UTF-8``
  compares through the locale on PostgreSQL 15, a cost in every key insert);
- ``id`` (from ``messages_id_seq``, kept) is no longer unique-indexed: nothing looks a message
  up by ``id`` (replies name ``(cid, seq)``, reports and deletes ``(conversation_id, seq)``),
  and the sequence alone hands out each value once. One B-tree fewer per message.

The function gains a last argument, ``probe boolean DEFAULT false`` (0005's eight-argument one
is dropped), so a call without it is the common path.

Rows move by copy, under an exclusive lock: a new partitioned table with 0001's columns,
defaults, ``kind`` check and identity, the rows, the keys built after the copy, the identity's
sequence set to the old one's position and renamed to ``messages_id_seq`` (the function draws
from it), names swapped, statistics rebuilt. There are no grants on the table (its owner, the
migrating role, is the application's).

Downgrade copies the rows back into a plain table with 0006's keys and restores 0005's function.
It refuses (and changes nothing) when a sender reused a ``cmid`` in two conversations, which
the old ``(sender_id, cmid)`` key cannot hold.

Revision ID: 0007_partitioned_messages
Revises: 0006_message_notifications
Create Date: 2026-12-04 18:30:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0007_partitioned_messages"
down_revision: str | None = "0006_message_notifications"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Hash partitions of ``messages`` (``common.models.MESSAGE_PARTITIONS`` must match).
PARTITIONS = 4

#: ``status`` of an outcome row: unchanged from 0005 (``realtime.domain.BatchStatus``).
STATUSES = {
    "STORED_NOW": 0,
    "STORED_BEFORE": 1,
    "CMID_CONFLICT": 2,
    "NOT_MEMBER": 3,
    "CLOSED": 4,
}

COLUMNS = "conversation_id, seq, id, sender_id, cmid, body, kind, created_at, deleted_at"

#: The argument types of 0005's function, and of this one (``probe`` added).
_ARGS_0005 = "bigint[], bigint[], text[], text[], text[], bigint[], bigint[], bigint[]"
_ARGS = f"{_ARGS_0005}, boolean"

#: 0005's function, inserting without reading the resend key first: the key's unique index is
#: the check, and a call that meets it is redone with ``probe`` (see the INSERT's comment).
#: Every read of ``messages`` names ``conversation_id``, so it reads one partition.
CREATE = r"""
CREATE FUNCTION mm_commit_batch(
    s_cid bigint[], s_sender bigint[], s_cmid text[], s_body text[], s_kind text[],
    r_cid bigint[], r_user bigint[], r_seq bigint[], probe boolean DEFAULT false
) RETURNS TABLE (op text, ord int, status smallint, msg_id bigint, seq bigint, time_ms bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    n int := cardinality(s_cid);
    st smallint[];
    known smallint[];
    ids bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    seqs bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    ats bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    tops bigint[];
    cur bigint := NULL;
    nxt bigint := 0;
    stamp bigint := (extract(epoch FROM now()) * 1000)::bigint;
BEGIN
    -- The batch's conversations, locked in id order: the numbering below reads each one's top
    -- seq, which no other writer can move until this transaction ends (the API's close and
    -- read paths lock the same row).
    PERFORM FROM conversations WHERE id = ANY (s_cid || r_cid) ORDER BY id FOR UPDATE;

    IF n > 0 THEN
        IF probe THEN
            -- The call after a unique_violation (the INSERT below): which sends are stored
            -- already, by the resend key; a stored key is a resend when body and kind match,
            -- else a conflict. Each probe names conversation_id, so it reads one partition.
            SELECT array_agg(
                       CASE WHEN m.id IS NULL THEN NULL
                            WHEN (m.body, m.kind) = (k.body, k.kind) THEN 1
                            ELSE 2 END::smallint ORDER BY k.i),
                   array_agg(m.id ORDER BY k.i),
                   array_agg(m.seq ORDER BY k.i),
                   array_agg((extract(epoch FROM m.created_at) * 1000)::bigint ORDER BY k.i)
            INTO known, ids, seqs, ats
            FROM unnest(s_cid, s_sender, s_cmid, s_body, s_kind)
                WITH ORDINALITY AS k(cid, sender, cmid, body, kind, i)
            LEFT JOIN LATERAL (
                SELECT x.id, x.seq, x.created_at, x.body, x.kind
                FROM messages x
                WHERE x.conversation_id = k.cid AND x.sender_id = k.sender AND x.cmid = k.cmid
                LIMIT 1
            ) m ON true;
        END IF;

        -- One keyed probe per row and key (LATERAL ... LIMIT 1): the conversation, the
        -- membership, and on a conversation's first row its top seq (which names
        -- conversation_id: one partition; the numbering reads no other). Statuses: STATUSES
        -- above; a known resend or conflict comes first. The node sends the rows grouped by
        -- conversation, in arrival order within each, and settles in-batch duplicates of a
        -- key itself.
        SELECT array_agg(
                   coalesce(known[k.i],
                            CASE WHEN c.id IS NULL OR me.user_id IS NULL THEN 3
                                 WHEN c.closed_at IS NOT NULL THEN 4
                                 ELSE 0 END::smallint) ORDER BY k.i),
               array_agg(coalesce(t.seq, 0) ORDER BY k.i)
        INTO st, tops
        FROM unnest(s_cid, s_sender) WITH ORDINALITY AS k(cid, sender, i)
        LEFT JOIN LATERAL (
            SELECT x.id, x.closed_at FROM conversations x WHERE x.id = k.cid LIMIT 1
        ) c ON true
        LEFT JOIN LATERAL (
            SELECT x.user_id FROM conversation_members x
            WHERE x.conversation_id = k.cid AND x.user_id = k.sender LIMIT 1
        ) me ON true
        LEFT JOIN LATERAL (
            SELECT x.seq FROM messages x
            WHERE x.conversation_id = k.cid AND (k.i = 1 OR s_cid[k.i - 1] <> k.cid)
            ORDER BY x.seq DESC LIMIT 1
        ) t ON true;

        -- Number the new rows: a conversation's rows are adjacent, so one running counter.
        FOR i IN 1 .. n LOOP
            IF s_cid[i] IS DISTINCT FROM cur THEN
                cur := s_cid[i];
                nxt := tops[i];
            END IF;
            IF st[i] = 0 THEN
                nxt := nxt + 1;
                seqs[i] := nxt;
                ids[i] := nextval('messages_id_seq'::regclass);
                ats[i] := stamp;
            END IF;
        END LOOP;

        -- Without probe, a resend (or a conflict) meets the resend key's unique index here:
        -- the call fails with unique_violation and, being the whole transaction, stores
        -- nothing; the node calls again with probe. Resends are rare, so most calls never
        -- read the resend key: the index insert is the check.
        INSERT INTO messages (id, conversation_id, seq, sender_id, cmid, body, kind, created_at)
        SELECT v.id, v.cid, v.seq, v.sender, v.cmid, v.body, v.kind, now()
        FROM unnest(ids, s_cid, seqs, s_sender, s_cmid, s_body, s_kind, st)
            AS v(id, cid, seq, sender, cmid, body, kind, st)
        WHERE v.st = 0;

        RETURN QUERY
        SELECT 's', v.i::int, v.st, v.id, v.seq, v.at
        FROM unnest(st, ids, seqs, ats) WITH ORDINALITY AS v(st, id, seq, at, i);
    END IF;

    IF cardinality(r_cid) > 0 THEN
        -- A receipt moves last_read_seq forward, never past the conversation's top seq.
        UPDATE conversation_members cm
        SET last_read_seq = GREATEST(cm.last_read_seq, LEAST(v.seq, v.top))
        FROM (
            SELECT g.cid, g.user_id, g.seq, coalesce(t.seq, 0) AS top
            FROM (
                SELECT r.cid, r.user_id, max(r.seq) AS seq
                FROM unnest(r_cid, r_user, r_seq) AS r(cid, user_id, seq)
                GROUP BY r.cid, r.user_id
            ) g
            CROSS JOIN LATERAL (
                SELECT x.id FROM conversations x
                WHERE x.id = g.cid AND x.closed_at IS NULL LIMIT 1
            ) c
            LEFT JOIN LATERAL (
                SELECT x.seq FROM messages x WHERE x.conversation_id = g.cid
                ORDER BY x.seq DESC LIMIT 1
            ) t ON true
        ) v
        WHERE cm.conversation_id = v.cid AND cm.user_id = v.user_id
          AND cm.last_read_seq < LEAST(v.seq, v.top);

        -- Read back by key in a statement of its own, which sees the update (0004: a join of
        -- the receipts to the UPDATE's RETURNING was a nested loop over two CTEs).
        RETURN QUERY
        SELECT 'r', r.ord::int,
               (CASE WHEN c.closed_at IS NOT NULL THEN 4
                     WHEN cm.user_id IS NOT NULL THEN 0 ELSE 3 END)::smallint,
               NULL::bigint, cm.last_read_seq, NULL::bigint
        FROM unnest(r_cid, r_user) WITH ORDINALITY AS r(cid, user_id, ord)
        LEFT JOIN LATERAL (
            SELECT x.closed_at FROM conversations x WHERE x.id = r.cid LIMIT 1
        ) c ON true
        LEFT JOIN LATERAL (
            SELECT x.user_id, x.last_read_seq FROM conversation_members x
            WHERE x.conversation_id = r.cid AND x.user_id = r.user_id LIMIT 1
        ) cm ON true;
    END IF;
END
$fn$
"""


def _new_table(name: str, partitioned: bool) -> str:
    """``messages``' columns, identity, defaults and check (0001), without keys (built after
    the copy)."""
    cmid_collation = 'COLLATE "C" ' if partitioned else ""
    return f"""
    CREATE TABLE {name} (
        conversation_id bigint NOT NULL,
        seq bigint NOT NULL,
        id bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL,
        sender_id bigint NOT NULL,
        cmid varchar(64) {cmid_collation}NOT NULL,
        body text NOT NULL,
        kind varchar(16) NOT NULL DEFAULT 'text',
        created_at timestamptz NOT NULL DEFAULT now(),
        deleted_at timestamptz,
        CONSTRAINT ck_messages_kind CHECK (kind IN ('text', 'image', 'system'))
    ){" PARTITION BY HASH (conversation_id)" if partitioned else ""}
    """


def _move(new: str) -> None:
    """Copy ``messages`` into ``new``, whose identity continues the old one's sequence under its
    name (``mm_commit_batch`` draws ids from ``messages_id_seq``), and take the old one's place."""
    op.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
    # ``new`` is one of this module's two table names, never input.
    op.execute(f"INSERT INTO {new} ({COLUMNS}) SELECT {COLUMNS} FROM messages")  # noqa: S608
    op.execute(
        f"SELECT setval(pg_get_serial_sequence('{new}', 'id'), last_value, is_called)"  # noqa: S608
        " FROM messages_id_seq"
    )
    op.execute("DROP TABLE messages")
    op.execute(f"ALTER TABLE {new} RENAME TO messages")
    op.execute(f"ALTER SEQUENCE {new}_id_seq RENAME TO messages_id_seq")


def _primary_key() -> None:
    op.execute("ALTER TABLE messages ADD CONSTRAINT pk_messages PRIMARY KEY (conversation_id, seq)")


def upgrade() -> None:
    op.execute(_new_table("messages_partitioned", partitioned=True))
    for r in range(PARTITIONS):
        op.execute(
            f"CREATE TABLE messages_p{r} PARTITION OF messages_partitioned"
            f" FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {r})"
        )
    _move("messages_partitioned")
    _primary_key()
    op.execute(
        "ALTER TABLE messages ADD CONSTRAINT uq_messages_conversation_sender_cmid"
        " UNIQUE (conversation_id, sender_id, cmid)"
    )
    op.execute(f"DROP FUNCTION mm_commit_batch({_ARGS_0005})")
    op.execute(CREATE)
    op.execute("ANALYZE messages")


def downgrade() -> None:
    """Back to 0006's plain table, rows kept; refused when 0006's key cannot hold them."""
    op.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
    op.execute(
        """
        DO $$
        DECLARE reused bigint;
        BEGIN
            SELECT count(*) INTO reused FROM (
                SELECT 1 FROM messages GROUP BY sender_id, cmid
                HAVING count(DISTINCT conversation_id) > 1
            ) k;
            IF reused > 0 THEN
                RAISE EXCEPTION 'cannot downgrade 0007: % (sender_id, cmid) pairs are in more than one conversation, which UNIQUE (sender_id, cmid) cannot hold', reused;
            END IF;
        END
        $$
        """
    )
    op.execute(_new_table("messages_plain", partitioned=False))
    _move("messages_plain")
    _primary_key()
    op.execute("ALTER TABLE messages ADD CONSTRAINT uq_messages_id UNIQUE (id)")
    op.execute(
        "ALTER TABLE messages ADD CONSTRAINT uq_messages_sender_cmid UNIQUE (sender_id, cmid)"
    )
    path = Path(__file__).with_name("0005_insert_mostly_write_path.py")
    spec = importlib.util.spec_from_file_location("_mm_0005", path)
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(f"DROP FUNCTION mm_commit_batch({_ARGS})")
    op.execute(previous.CREATE)
    op.execute("ANALYZE messages")
