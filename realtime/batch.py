"""Group-commit persistence of sends and read receipts (asyncpg, one round trip per batch).

Owns the write path to PostgreSQL. Requests queue without awaiting, each on the lane of its
conversation (``cid % flushers``); one flusher task per lane (two by default) commits its lane in
batches of up to ``batch_max``: while a flush is in flight the next batch fills. The lanes share
no conversation, so their transactions never wait on each other's row locks and their commits
(fsync) overlap, as does the node's work on one batch (arrays before, acks and fan-out after)
with the other's; one conversation's batches still commit, and are reported, in order. Each
flusher keeps its pooled connection between batches (no acquire and no reset query per batch)
and gives it back after any failure.

A batch is one call of the ``mm_commit_batch`` function (alembic ``0003``, ``0004``), outside any
explicit transaction, so the call is the whole transaction and one round trip: it locks the batch's
conversation rows in id order (two nodes never deadlock), answers resends with their original
place (a different body is a conflict), numbers only the new messages with the next ``seq``
values, inserts them, advances ``last_seq``, bumps the other members' unread counters and
applies read receipts, and returns after its COMMIT. Outcomes are handed to ``on_done`` only
then: that is what makes an ack mean "durable". Seven round trips (BEGIN, five statements,
COMMIT) became one; docs/BENCHMARKS.md has the before and after.

It must not deliver or encode frames (the node does) and never lets an asyncpg exception out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final, TypeAlias

import asyncpg

from common.codes import Err
from realtime import failpoints
from realtime.domain import (
    ReadOutcome,
    ReadRequest,
    Replier,
    SendOutcome,
    SendRequest,
    Stored,
)
from realtime.store import UNAVAILABLE_ERRORS

log = logging.getLogger("realtime.batch")

#: The whole transaction, one round trip: ``mm_commit_batch`` (alembic 0004) locks the batch's
#: conversations in id order, dedupes resends, numbers and inserts the new messages, advances
#: ``last_seq``, bumps unread counters and applies receipts. Run outside any explicit
#: transaction, the call is its own transaction and answers only after its COMMIT.
COMMIT_SQL: Final = """
SELECT op, ord, status, msg_id, seq, time_ms
FROM mm_commit_batch($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                     $6::bigint[], $7::bigint[], $8::bigint[])
"""

STATEMENTS: Final = (COMMIT_SQL,)
MAX_RACE_RETRIES: Final = 3

#: ``status`` of a row of ``mm_commit_batch``: 0 stored now, 1 stored before (a resend), else
#: the refusal.
STORED_NOW: Final = 0
STORED_BEFORE: Final = 1
REFUSALS: Final = {
    2: Err.CMID_CONFLICT,
    3: Err.NOT_MEMBER,
    4: Err.CONVERSATION_CLOSED,
}

Item = tuple[SendRequest | ReadRequest, Replier]
Outcome = SendOutcome | ReadOutcome


class _CommitUnknown(Exception):
    """The connection failed while the call was in flight: the batch may or may not be stored."""


Connection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"


class BatchWriter:
    """Queue sends and reads; flusher tasks commit them in batches and report outcomes."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        *,
        batch_max: int,
        timeout_s: float,
        on_done: Callable[[list[Outcome]], None],
        max_queue: int = 50_000,
        flushers: int = 2,
    ) -> None:
        self.pool, self.batch_max, self.timeout_s = pool, batch_max, timeout_s
        self.on_done, self.max_queue, self.flushers = on_done, max_queue, flushers
        self._queues: list[list[Item]] = [[] for _ in range(flushers)]
        self._wakes = [asyncio.Event() for _ in range(flushers)]
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._flushing = 0
        #: Connections kept between batches (at most one per flusher).
        self._held: list[Connection] = []
        self.batches = 0
        self.last_flush_s = 0.0
        self.committed = 0

    def submit(self, request: SendRequest | ReadRequest, reply: Replier) -> None:
        """Queue without awaiting; the outcome reaches ``on_done`` after the commit."""
        if self.pending >= self.max_queue:
            self.on_done([_failed((request, reply), Err.RATE_LIMITED)])
            return
        lane = request.cid % self.flushers
        self._queues[lane].append((request, reply))
        self._idle.clear()
        self._wakes[lane].set()

    @property
    def pending(self) -> int:
        return sum(map(len, self._queues))

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(i), name=f"batch-writer-{i}")
            for i in range(self.flushers)
        ]

    async def stop(self, drain_timeout_s: float) -> None:
        """Let queued requests commit (bounded by ``drain_timeout_s``), then stop the flushers."""
        if any(not task.done() for task in self._tasks):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), drain_timeout_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        held, self._held = self._held, []
        for con in held:
            await self._release(con)
        leftovers = [item for queue in self._queues for item in queue]
        if leftovers:
            # The flushers are gone: these were never stored, the clients resend after reconnecting.
            self._queues = [[] for _ in range(self.flushers)]
            self.on_done([_failed(item, Err.DB_UNAVAILABLE) for item in leftovers])

    async def _run(self, lane: int) -> None:
        wake = self._wakes[lane]
        while True:
            queue = self._queues[lane]
            if not queue:
                wake.clear()
                await wake.wait()
                continue
            batch = queue[: self.batch_max]
            del queue[: self.batch_max]
            self._flushing += 1
            started = time.perf_counter()
            try:
                outcomes = await self.flush(batch)
            finally:
                self._flushing -= 1
            # Read by on_done (the metrics hook) for the batch it is handed.
            self.last_flush_s = time.perf_counter() - started
            failpoints.hit("after_commit_before_fanout")
            self.batches += 1
            if not self._flushing and not self.pending:
                self._idle.set()
            try:
                self.on_done(outcomes)
            except Exception:
                log.exception("delivering batch outcomes failed")

    async def flush(self, batch: list[Item]) -> list[Outcome]:
        """Commit ``batch`` and return one outcome per item, in order; never raises."""
        for _attempt in range(MAX_RACE_RETRIES):
            try:
                return await self._commit(batch)
            except asyncpg.UniqueViolationError:
                # A resend raced on another conversation: nothing was stored, the next call
                # sees the racer's row and answers it as a resend.
                continue
            except _CommitUnknown as exc:
                # Stored or not, only a resend (same cmid) can tell: never claim "not stored".
                log.warning("commit outcome unknown", extra={"error": str(exc), "n": len(batch)})
                return [_failed(item, Err.INTERNAL) for item in batch]
            except UNAVAILABLE_ERRORS as exc:
                log.warning("database unavailable", extra={"error": type(exc).__name__})
                return [_failed(item, Err.DB_UNAVAILABLE) for item in batch]
            except Exception as exc:
                log.error("batch failed", extra={"error": type(exc).__name__, "n": len(batch)})
                if len(batch) == 1:
                    return [_failed(batch[0], Err.INTERNAL)]
                # Isolate the item that breaks the batch: each alone in its own transaction.
                outcomes: list[Outcome] = []
                for item in batch:
                    outcomes.extend(await self.flush([item]))
                return outcomes
        return [_failed(item, Err.INTERNAL) for item in batch]

    async def _commit(self, batch: list[Item]) -> list[Outcome]:
        """One ``mm_commit_batch`` call on this lane's connection: one round trip, one COMMIT."""
        sends = [r for r, _ in batch if isinstance(r, SendRequest)]
        reads = [r for r, _ in batch if isinstance(r, ReadRequest)]
        con = self._held.pop() if self._held else None
        if con is None or con.is_closed():
            if con is not None:
                await self._release(con)
            # Failing here stores nothing: the caller answers the retryable db_unavailable.
            con = await self.pool.acquire(timeout=self.timeout_s)
        failpoints.hit("before_commit")
        try:
            rows = await con.fetch(
                COMMIT_SQL,
                [r.cid for r in sends],
                [r.sender for r in sends],
                [r.cmid for r in sends],
                [r.body for r in sends],
                [r.kind for r in sends],
                [r.cid for r in reads],
                [r.user for r in reads],
                [r.seq for r in reads],
            )
        except BaseException as exc:
            # A failed release (the connection died and asyncpg already dropped it) must not
            # turn the outcome into "nothing stored".
            await self._release(con)
            if isinstance(exc, UNAVAILABLE_ERRORS):
                # The COMMIT is part of the call: the connection failing (or PostgreSQL shutting
                # down) mid-call may come after it.
                raise _CommitUnknown(type(exc).__name__) from exc
            raise
        self._held.append(con)
        return self._outcomes(batch, rows)

    def _outcomes(self, batch: list[Item], rows: list[asyncpg.Record]) -> list[Outcome]:
        by_position = {(row[0], row[1]): row for row in rows}
        outcomes: list[Outcome] = []
        positions = {"s": 0, "r": 0}
        for request, reply in batch:
            op = "s" if isinstance(request, SendRequest) else "r"
            positions[op] += 1
            _op, _ord, status, message_id, seq, time_ms = by_position[(op, positions[op])]
            if isinstance(request, SendRequest):
                if status in (STORED_NOW, STORED_BEFORE):
                    stored = Stored(message_id, seq, time_ms, dup=status == STORED_BEFORE)
                    outcomes.append(SendOutcome(request, reply, stored))
                    if status == STORED_NOW:
                        self.committed += 1
                else:
                    outcomes.append(SendOutcome(request, reply, error=REFUSALS[status]))
            elif status == STORED_NOW:
                outcomes.append(ReadOutcome(request, reply, seq=seq))
            else:
                outcomes.append(ReadOutcome(request, reply, error=REFUSALS[status]))
        return outcomes

    async def _release(self, con: Connection) -> None:
        try:
            await self.pool.release(con)
        except Exception as exc:
            log.warning("connection release failed", extra={"error": type(exc).__name__})


def _failed(item: Item, code: Err) -> Outcome:
    request, reply = item
    if isinstance(request, SendRequest):
        return SendOutcome(request, reply, error=code)
    return ReadOutcome(request, reply, error=code)
