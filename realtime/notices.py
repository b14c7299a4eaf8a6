"""Offline-message notifications: one ``message`` notification per conversation until read.

Owns, for one node, the ``notifications`` rows of kind ``message``. A committed message whose
recipient has no socket here and no route on any other node (the broker answers that from the
same routes lookup it makes for the fan-out, see :meth:`realtime.broker.RedisBroker.publish`)
is queued here as ``(recipient, conversation, sender, seq)``; a read receipt as ``(reader,
conversation, seq)``. Nothing is awaited on the way: the queue is bounded and one background
task writes whatever queued since its last round trip (at most every :data:`INTERVAL_S`), with
at most two statements:

- :data:`CLEAR_SQL` marks read the unread message notification of each (reader, conversation)
  whose newest message the receipt covers;
- :data:`UPSERT_SQL` inserts one notification per (recipient, conversation), or adds to the
  unread one's count (``ON CONFLICT`` on the partial unique index of alembic ``0006``, so two
  nodes coalesce too). It skips messages the recipient has read meanwhile, members no longer
  in the conversation, closed conversations (unmatch, block) and blocked pairs. It takes no
  lock on the conversation rows (a ``FOR SHARE`` there would make the batch writer's ``FOR
  UPDATE`` wait behind it); an upsert racing an unmatch or a block, which delete the
  conversation's notifications, can leave a row behind, and the API hides message
  notifications of closed conversations and blocked pairs.

Clears run first: a receipt and a later offline message in one round trip leave the new one
unread, and an offline message followed by its own receipt is skipped by the read-mark check.
Resends (``dup``) are not counted again. If PostgreSQL is down or the queue is full the
notifications are dropped (counted in ``mm_rt_message_notifications_total{outcome}``, logged):
the messages themselves are safe and reach the recipient by ``sync``.

It must not await on a socket or in the send path; asyncpg exceptions stay in this module. It
must not import the ORM: :data:`STATEMENTS` are prepared against the migrated schema by a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg

from common.tasks import cancel_and_wait
from realtime.metrics import TALLY
from realtime.store import UNAVAILABLE_ERRORS

log = logging.getLogger("realtime.notices")

#: Queued offline messages and receipts beyond which new ones are dropped (counted).
QUEUE_MAX: Final = 20_000
#: After a failed write, wait this long before the next (PostgreSQL is likely down).
RETRY_S: Final = 1.0
#: At least this long between two writes, so that under load one statement carries many
#: messages and one row update serves a whole conversation's burst (nobody waits for these:
#: the recipient is offline). The first after a quiet spell is written at once.
INTERVAL_S: Final = 0.1

#: Every table and column this module's SQL touches (checked against common.models by a test).
COLUMNS: Final = {
    "notifications": {"id", "user_id", "kind", "payload", "read_at"},
    "conversations": {"id", "closed_at"},
    "conversation_members": {"conversation_id", "user_id", "last_read_seq"},
    "blocks": {"blocker_id", "blocked_id"},
}

CLEAR_SQL: Final = """
UPDATE notifications n SET read_at = now()
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS r(user_id, cid, seq)
WHERE n.user_id = r.user_id AND n.kind = 'message' AND n.read_at IS NULL
  AND (n.payload ->> 'conversation_id')::bigint = r.cid
  AND (n.payload ->> 'seq')::bigint <= r.seq
"""

# Rows: one per offline (recipient, message).
UPSERT_SQL: Final = """
INSERT INTO notifications AS n (user_id, kind, payload)
SELECT r.user_id, 'message',
       jsonb_build_object('user_id', max(r.sender), 'conversation_id', r.cid,
                          'count', count(*), 'seq', max(r.seq))
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) AS r(user_id, cid, sender, seq)
JOIN conversations c ON c.id = r.cid AND c.closed_at IS NULL
JOIN conversation_members m ON m.conversation_id = r.cid AND m.user_id = r.user_id
WHERE r.seq > m.last_read_seq
  AND NOT EXISTS (
      SELECT FROM blocks b
      WHERE (b.blocker_id = r.user_id AND b.blocked_id = r.sender)
         OR (b.blocker_id = r.sender AND b.blocked_id = r.user_id))
GROUP BY r.user_id, r.cid
ON CONFLICT (user_id, ((payload ->> 'conversation_id')::bigint))
    WHERE kind = 'message' AND read_at IS NULL
DO UPDATE SET payload = n.payload || jsonb_build_object(
    'user_id', excluded.payload -> 'user_id',
    'count', (n.payload ->> 'count')::bigint + (excluded.payload ->> 'count')::bigint,
    'seq', greatest((n.payload ->> 'seq')::bigint, (excluded.payload ->> 'seq')::bigint))
"""

STATEMENTS: Final = (CLEAR_SQL, UPSERT_SQL)


@dataclass(slots=True)
class OfflineCheck:
    """One committed message whose ``users`` have no socket on this node.

    Handed to the broker with the message's fan-out; the broker calls :meth:`unrouted` with
    those of ``users`` that no other node hosts either.
    """

    notices: MessageNotices
    cid: int
    seq: int
    sender: int
    users: Sequence[int]

    def unrouted(self, users: Sequence[int]) -> None:
        self.notices.offline(self.cid, self.seq, self.sender, users)


class MessageNotices:
    """Queues offline messages and receipts; one task writes them; see the module docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        *,
        timeout_s: float,
        is_local: Callable[[int], bool],
        queue_max: int = QUEUE_MAX,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.pool, self.timeout_s, self.is_local = pool, timeout_s, is_local
        self.queue_max, self.interval_s = queue_max, interval_s
        #: ``(recipient, cid, sender, seq)`` per offline recipient of a committed message.
        self._offline: list[tuple[int, int, int, int]] = []
        #: ``(reader, cid) -> seq``: the newest receipt of each since the last write.
        self._reads: dict[tuple[int, int], int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="message-notices")

    async def close(self) -> None:
        """Write what is queued (bounded by the timeout), then stop."""
        if self._task is None:
            return
        await cancel_and_wait(self._task)
        self._task = None
        if self.pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), self.timeout_s)

    @property
    def pending(self) -> int:
        return len(self._offline) + len(self._reads)

    # -- what the node hands in (never awaits) -------------------------------------------------

    def check(self, cid: int, seq: int, sender: int, peers: Sequence[int]) -> OfflineCheck | None:
        """The broker's question for a new message, or None when every peer has a socket here."""
        away = [user for user in peers if not self.is_local(user)]
        return OfflineCheck(self, cid, seq, sender, away) if away else None

    def offline(self, cid: int, seq: int, sender: int, users: Sequence[int]) -> None:
        """``users`` got the message on no socket anywhere: they are to be notified."""
        for user in users:
            if self.is_local(user):
                continue  # connected here since the fan-out: it reaches them by sync
            if self.pending >= self.queue_max:
                TALLY.message_notices["dropped"] += 1
                continue
            self._offline.append((user, cid, sender, seq))
        self._wake.set()

    def read(self, user: int, cid: int, seq: int) -> None:
        """A committed read receipt: clears the conversation's notification it covers."""
        key = (user, cid)
        if key not in self._reads and self.pending >= self.queue_max:
            TALLY.message_notices["dropped"] += 1
            return
        self._reads[key] = max(seq, self._reads.get(key, 0))
        self._wake.set()

    # -- the writer ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.interval_s if await self.flush() else RETRY_S)

    async def flush(self) -> bool:
        """Write everything queued in one round trip or two; False when it was dropped."""
        offline, self._offline = self._offline, []
        reads, self._reads = self._reads, {}
        try:
            async with self.pool.acquire(timeout=self.timeout_s) as con:
                if reads:
                    keys = list(reads)
                    await con.execute(
                        CLEAR_SQL, [k[0] for k in keys], [k[1] for k in keys], list(reads.values())
                    )
                if offline:
                    columns = (list(column) for column in zip(*offline, strict=True))
                    await con.execute(UPSERT_SQL, *columns)
        except UNAVAILABLE_ERRORS as exc:
            log.warning("message notifications not written", extra={"error": type(exc).__name__})
        except asyncpg.PostgresError as exc:
            log.error("message notifications refused", extra={"error": type(exc).__name__})
        else:
            TALLY.message_notices["written"] += len(offline)
            TALLY.message_notices["cleared"] += len(reads)
            return True
        TALLY.message_notices["dropped"] += len(offline) + len(reads)
        return False
