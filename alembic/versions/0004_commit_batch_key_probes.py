"""mm_commit_batch: each batch row's lookups are index probes, whatever the table sizes.

``0003``'s function joined the batch to ``conversations`` (sends and receipts) and to
``conversation_members`` (receipts) with plain joins, and PostgreSQL answered each with a hash
join over the whole table: a sequential scan while the table was small or, in the node's
sessions, which turn sequential scans off (``realtime/store.py``), a full index scan. Either
way every batch read every conversation, and the node's sessions keep that generic plan for
their whole life. Each lookup is now a ``LATERAL (... WHERE key = ... LIMIT 1)`` subquery, which
the planner cannot flatten into a join (the form ``0003`` already used for the
``(sender_id, cmid)`` probe): a batch's lookups cost the same with 50 conversations or 50
million. Results are unchanged (the outcome tests of ``tests/realtime/test_batch.py``). Through
``auto_explain`` at the benchmark's sizes (300 conversations, the node's session settings):
``0003``'s plans read all 300 rows of ``conversations`` in three places, ``0004``'s probe one
row per batch row.

Revision ID: 0004_commit_batch_key_probes
Revises: 0003_commit_batch_function
Create Date: 2026-11-27 16:20:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0004_commit_batch_key_probes"
down_revision: str | None = "0003_commit_batch_function"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE = r"""
CREATE OR REPLACE FUNCTION mm_commit_batch(
    s_cid bigint[], s_sender bigint[], s_cmid text[], s_body text[], s_kind text[],
    r_cid bigint[], r_user bigint[], r_seq bigint[]
) RETURNS TABLE (op text, ord int, status smallint, msg_id bigint, seq bigint, time_ms bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    id_sequence regclass := pg_get_serial_sequence('messages', 'id')::regclass;
BEGIN
    PERFORM FROM conversations WHERE id = ANY (s_cid || r_cid) ORDER BY id FOR UPDATE;

    IF cardinality(s_cid) > 0 THEN
        -- Each CTE is one pass over the batch's rows (window functions, index probes), never a
        -- join of two CTEs: their row estimates are guesses, and a nested loop over two of them
        -- made a 500-message batch cost 60 us a message instead of 36.
        RETURN QUERY
        WITH k AS (
            SELECT k.*,
                   row_number() OVER w = 1 AS is_first,
                   first_value(k.cid) OVER w AS f_cid,
                   first_value(k.body) OVER w AS f_body,
                   first_value(k.kind) OVER w AS f_kind
            FROM unnest(s_cid, s_sender, s_cmid, s_body, s_kind)
                WITH ORDINALITY AS k(cid, sender, cmid, body, kind, ord)
            WINDOW w AS (PARTITION BY k.sender, k.cmid ORDER BY k.ord)
        ),
        -- One probe of the (sender_id, cmid) index and one of the conversations' key per row.
        -- Every lookup by key in this function is a LATERAL ... LIMIT 1 subquery: the planner
        -- cannot flatten it into a join, so the session's cached generic plan never hashes a
        -- whole table (a plain join to conversations read all of it, by a sequential or a full
        -- index scan, on every call).
        looked AS (
            SELECT k.*, m.id AS s_id, m.seq AS s_seq, m.created_at AS s_at,
                   m.conversation_id AS s_cid, m.body AS s_body, m.kind AS s_kind,
                   m.id IS NOT NULL AS was_stored,
                   c.id IS NOT NULL AS known, c.closed_at IS NULL AS open, c.last_seq
            FROM k
            LEFT JOIN LATERAL (
                SELECT * FROM messages x WHERE x.sender_id = k.sender AND x.cmid = k.cmid LIMIT 1
            ) m ON true
            LEFT JOIN LATERAL (
                SELECT x.id, x.closed_at, x.last_seq FROM conversations x WHERE x.id = k.cid LIMIT 1
            ) c ON true
        ),
        decided AS (
            SELECT l.*,
                   CASE
                       WHEN l.was_stored THEN
                           CASE WHEN (l.cid, l.body, l.kind) = (l.s_cid, l.s_body, l.s_kind)
                                THEN 1 ELSE 2 END
                       WHEN (l.cid, l.body, l.kind) <> (l.f_cid, l.f_body, l.f_kind) THEN 2
                       WHEN NOT l.known THEN 3
                       WHEN NOT l.open THEN 4
                       WHEN l.is_first THEN 0
                       ELSE 1
                   END AS status
            FROM looked l
        ),
        numbered AS (
            SELECT d.*,
                   CASE WHEN d.status = 0 THEN d.last_seq + count(*) FILTER (WHERE d.status = 0)
                       OVER (PARTITION BY d.cid ORDER BY d.ord) END AS new_seq,
                   CASE WHEN d.status = 0 THEN nextval(id_sequence) END AS new_id
            FROM decided d
        ),
        inserted AS (
            INSERT INTO messages (id, conversation_id, seq, sender_id, cmid, body, kind, created_at)
            SELECT new_id, cid, new_seq, sender, cmid, body, kind, now()
            FROM numbered WHERE status = 0
        ),
        advanced AS (
            UPDATE conversations c SET last_seq = a.top, last_message_at = now()
            FROM (SELECT cid, max(new_seq) AS top FROM numbered WHERE status = 0 GROUP BY cid) a
            WHERE c.id = a.cid
        ),
        unread AS (
            UPDATE conversation_members cm SET unread_count = cm.unread_count + d.n
            FROM (
                SELECT o.conversation_id, o.user_id, count(*)::int AS n
                FROM numbered f
                JOIN conversation_members o ON o.conversation_id = f.cid AND o.user_id <> f.sender
                WHERE f.status = 0
                GROUP BY o.conversation_id, o.user_id
            ) d
            WHERE cm.conversation_id = d.conversation_id AND cm.user_id = d.user_id
        )
        -- A copy inside the batch (status 1, not stored before) takes its first's place.
        SELECT 's', n.ord::int, n.status::smallint,
               coalesce(n.s_id, first_value(n.new_id) OVER w),
               coalesce(n.s_seq, first_value(n.new_seq) OVER w),
               (extract(epoch FROM coalesce(n.s_at, now())) * 1000)::bigint
        FROM numbered n
        WINDOW w AS (PARTITION BY n.sender, n.cmid ORDER BY n.ord);
    END IF;

    IF cardinality(r_cid) > 0 THEN
        -- One statement for all receipts (a loop of keyed UPDATEs cost twice as much from 100
        -- receipts up); each receipt's conversation is a keyed probe.
        UPDATE conversation_members cm
        SET last_read_seq = GREATEST(cm.last_read_seq, LEAST(v.seq, v.last_seq)),
            unread_count = (
                SELECT count(*) FROM messages m
                WHERE m.conversation_id = cm.conversation_id
                  AND m.seq > GREATEST(cm.last_read_seq, LEAST(v.seq, v.last_seq))
                  AND m.sender_id <> cm.user_id
                  AND m.deleted_at IS NULL
            )
        FROM (
            SELECT g.cid, g.user_id, g.seq, c.last_seq
            FROM (
                SELECT r.cid, r.user_id, max(r.seq) AS seq
                FROM unnest(r_cid, r_user, r_seq) AS r(cid, user_id, seq)
                GROUP BY r.cid, r.user_id
            ) g
            CROSS JOIN LATERAL (
                SELECT x.last_seq FROM conversations x
                WHERE x.id = g.cid AND x.closed_at IS NULL LIMIT 1
            ) c
        ) v
        WHERE cm.conversation_id = v.cid AND cm.user_id = v.user_id;

        -- Read back by key in a statement of its own (it sees the update), rather than joining
        -- the receipts to the UPDATE's RETURNING: that join of two CTEs was a nested loop,
        -- 359,400 row comparisons for 600 receipts.
        RETURN QUERY
        SELECT 'r', r.ord::int,
               (CASE WHEN c.closed_at IS NOT NULL THEN 4 WHEN cm.user_id IS NOT NULL THEN 0 ELSE 3
               END)::smallint,
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


def upgrade() -> None:
    op.execute(CREATE)


def downgrade() -> None:
    """Put back 0003's function (its text lives in that migration only)."""
    path = Path(__file__).with_name("0003_commit_batch_function.py")
    spec = importlib.util.spec_from_file_location("_mm_0003", path)
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(previous.CREATE.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
