"""mm_commit_batch inserts and nothing more: seq from the messages key, unread counts at read time.

``0004``'s function wrote three things per batch besides the messages: a new row version of each
conversation (``last_seq``, ``last_message_at``) and of each other member
(``unread_count``). Each is a heap tuple, WAL, and a dead version for vacuum, on the hottest
rows of the database; and its one big statement (window functions over the batch, four
data-modifying CTEs) cost more to start up than to run: a one-message call spent ~26 % of its
backend CPU in executor start-up and ~21 % finishing the CTEs (``perf``, docs/BENCHMARKS.md).

Now a batch, under the same row locks of its conversations in id order (so two nodes never
deadlock, and the API's close and read paths, which lock the same row, serialize with it):

- probes ``(sender_id, cmid)`` for resends and the conversation's key for its state, as before;
- reads the conversation's current top ``seq`` from the messages primary key (one backward probe;
  the row lock makes it stable until COMMIT), and numbers only the new messages after it;
- inserts them, and that is its only write for sends;
- for receipts, moves ``last_read_seq`` forward (at most to the top ``seq``).

The columns it no longer maintains are dropped: ``conversations.last_seq`` and
``last_message_at`` are the newest message's ``seq`` and ``created_at`` (one probe of the primary
key), ``conversation_members.unread_count`` is counted from the primary key range after
``last_read_seq`` (others' messages, not deleted). ``common/models.py`` maps the three as read-only
SQL expressions, so the API's readers keep their names.

A duplicate ``(sender_id, cmid)`` inside one batch is settled by the node before the call
(``realtime/batch.py``), so the statement needs no window over ``(sender_id, cmid)``.

``STATUSES`` names the outcome codes; ``realtime.domain.BatchStatus`` must match it (a test
checks, and that the database's function is the one defined here).

Revision ID: 0005_insert_mostly_write_path
Revises: 0004_commit_batch_key_probes
Create Date: 2026-12-02 19:40:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0005_insert_mostly_write_path"
down_revision: str | None = "0004_commit_batch_key_probes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: ``status`` of an outcome row: the one table of codes, shared with ``realtime.domain``.
STATUSES = {
    "STORED_NOW": 0,
    "STORED_BEFORE": 1,
    "CMID_CONFLICT": 2,
    "NOT_MEMBER": 3,
    "CLOSED": 4,
}

CREATE = r"""
CREATE OR REPLACE FUNCTION mm_commit_batch(
    s_cid bigint[], s_sender bigint[], s_cmid text[], s_body text[], s_kind text[],
    r_cid bigint[], r_user bigint[], r_seq bigint[]
) RETURNS TABLE (op text, ord int, status smallint, msg_id bigint, seq bigint, time_ms bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    n int := cardinality(s_cid);
    st smallint[];
    ids bigint[];
    seqs bigint[];
    ats bigint[];
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
        -- One keyed probe per row and key (LATERAL ... LIMIT 1: never a join that reads a
        -- whole table, see 0004): a stored (sender, cmid), the conversation, its top seq.
        -- Statuses: STATUSES above. The node sends the rows grouped by conversation, in
        -- arrival order within each, and settles in-batch duplicates of a cmid itself.
        SELECT array_agg(
                   CASE
                       WHEN m.id IS NOT NULL THEN
                           CASE WHEN (m.conversation_id, m.body, m.kind) = (k.cid, k.body, k.kind)
                                THEN 1 ELSE 2 END
                       WHEN c.id IS NULL OR me.user_id IS NULL THEN 3
                       WHEN c.closed_at IS NOT NULL THEN 4
                       ELSE 0
                   END ORDER BY k.i),
               array_agg(m.id ORDER BY k.i),
               array_agg(m.seq ORDER BY k.i),
               array_agg((extract(epoch FROM m.created_at) * 1000)::bigint ORDER BY k.i),
               array_agg(coalesce(t.seq, 0) ORDER BY k.i)
        INTO st, ids, seqs, ats, tops
        FROM unnest(s_cid, s_sender, s_cmid, s_body, s_kind)
            WITH ORDINALITY AS k(cid, sender, cmid, body, kind, i)
        LEFT JOIN LATERAL (
            SELECT x.id, x.seq, x.created_at, x.conversation_id, x.body, x.kind
            FROM messages x WHERE x.sender_id = k.sender AND x.cmid = k.cmid LIMIT 1
        ) m ON true
        LEFT JOIN LATERAL (
            SELECT x.id, x.closed_at FROM conversations x WHERE x.id = k.cid LIMIT 1
        ) c ON true
        LEFT JOIN LATERAL (
            SELECT x.user_id FROM conversation_members x
            WHERE x.conversation_id = k.cid AND x.user_id = k.sender LIMIT 1
        ) me ON true
        LEFT JOIN LATERAL (
            SELECT x.seq FROM messages x WHERE x.conversation_id = k.cid
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


def upgrade() -> None:
    op.execute(CREATE)
    # The function is the only writer of messages and checks, under the conversation's row
    # lock, that the sender is a member (member rows reference both users and conversations,
    # neither of which is ever deleted: closed, anonymised). Per-row foreign-key triggers cost
    # a third of a 500-message batch's backend CPU.
    op.drop_constraint("fk_messages_conversation_id_conversations", "messages", type_="foreignkey")
    op.drop_constraint("fk_messages_sender_id_users", "messages", type_="foreignkey")
    op.drop_column("conversation_members", "unread_count")
    op.drop_column("conversations", "last_message_at")
    op.drop_column("conversations", "last_seq")


def downgrade() -> None:
    """Put the columns back, filled from the messages, and 0004's function."""
    op.execute(
        "ALTER TABLE conversations ADD COLUMN last_seq bigint NOT NULL DEFAULT 0,"
        " ADD COLUMN last_message_at timestamptz"
    )
    op.execute(
        "ALTER TABLE conversation_members ADD COLUMN unread_count integer NOT NULL DEFAULT 0"
    )
    op.execute(
        "UPDATE conversations c SET last_seq = m.seq, last_message_at = m.created_at"
        " FROM (SELECT DISTINCT ON (conversation_id) conversation_id, seq, created_at"
        "       FROM messages ORDER BY conversation_id, seq DESC) m"
        " WHERE m.conversation_id = c.id"
    )
    op.execute(
        "UPDATE conversation_members cm SET unread_count = ("
        " SELECT count(*) FROM messages m WHERE m.conversation_id = cm.conversation_id"
        " AND m.seq > cm.last_read_seq AND m.sender_id <> cm.user_id AND m.deleted_at IS NULL)"
    )
    op.create_foreign_key("fk_messages_sender_id_users", "messages", "users", ["sender_id"], ["id"])
    op.create_foreign_key(
        "fk_messages_conversation_id_conversations",
        "messages",
        "conversations",
        ["conversation_id"],
        ["id"],
        ondelete="CASCADE",
    )
    path = Path(__file__).with_name("0004_commit_batch_key_probes.py")
    spec = importlib.util.spec_from_file_location("_mm_0004", path)
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(previous.CREATE)
