"""Group-commit persistence of sends and read receipts (asyncpg, one round trip per batch).

Owns the write path to PostgreSQL. Requests queue without awaiting, each on the lane of its
conversation (``cid % flushers``); one flusher task per lane (two by default) commits its lane in
batches of up to ``batch_max``: while a flush is in flight the next batch fills. The lanes share
no conversation, so their transactions never wait on each other's row locks and their commits
(fsync) overlap, as does the node's work on one batch (arrays before, acks and fan-out after)
with the other's; one conversation's batches still commit, and are reported, in order. Each
flusher keeps its pooled connection between batches (no acquire and no reset query per batch)
and gives it back after any failure.

A batch is one call of the ``mm_commit_batch`` function (:data:`COMMIT_FUNCTION`, defined by the
newest write-path migration), outside any explicit transaction, so the call is the whole
transaction and one round trip: it locks the batch's conversation rows in id order (two nodes
never deadlock), answers resends with their original place (a different body is a conflict),
numbers the new messages after each conversation's top ``seq`` (read from the messages key under
that lock), inserts them and applies read receipts, and returns after its COMMIT. It updates no
other row per message: ``last_seq`` and unread counts are derived at read time. Outcomes are
handed to ``on_done`` only then: that is what makes an ack mean "durable".

The function numbers rows in the order it gets them, so the writer hands it each batch grouped by
conversation (arrival order kept within each) and settles a ``(sender, cmid)`` repeated inside
one batch itself (:func:`plan_sends`): the first is stored, the repeats answer as its resends.

It must not deliver or encode frames (the node does) and never lets an asyncpg exception out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

import asyncpg

from common.codes import Err
from realtime import failpoints
from realtime.domain import (
    BatchStatus,
    ReadOutcome,
    ReadRequest,
    Replier,
    SendOutcome,
    SendRequest,
    Stored,
)
from realtime.store import UNAVAILABLE_ERRORS

log = logging.getLogger("realtime.batch")

#: The write path's one SQL function, called by :data:`COMMIT_SQL` (its body: the newest
#: ``alembic/versions`` migration that defines it; a test checks the database holds that one).
COMMIT_FUNCTION: Final = "mm_commit_batch"

#: The whole transaction, one round trip. Run outside any explicit transaction, the call is its
#: own transaction and answers only after its COMMIT.
COMMIT_SQL: Final = """
SELECT op, ord, status, msg_id, seq, time_ms
FROM mm_commit_batch($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                     $6::bigint[], $7::bigint[], $8::bigint[])
"""

STATEMENTS: Final = (COMMIT_SQL,)
MAX_RACE_RETRIES: Final = 3
#: A batch this large is flushed without waiting (see ``BatchWriter._fill``).
FILL: Final = 32

REFUSALS: Final = {
    BatchStatus.CMID_CONFLICT: Err.CMID_CONFLICT,
    BatchStatus.NOT_MEMBER: Err.NOT_MEMBER,
    BatchStatus.CLOSED: Err.CONVERSATION_CLOSED,
}

Item = tuple[SendRequest | ReadRequest, Replier]
Outcome = SendOutcome | ReadOutcome


@dataclass(frozen=True, slots=True)
class SendPlan:
    """How a batch's sends go to ``mm_commit_batch``.

    ``order``: indexes of the sends passed to the function, grouped by conversation, arrival
    order kept within each. ``repeats``: index of a later send repeating an earlier
    ``(sender, cmid)`` -> index of that first one.
    """

    order: list[int]
    repeats: dict[int, int]


def plan_sends(sends: Sequence[SendRequest]) -> SendPlan:
    """Group by conversation (a stable sort) and set repeated ``(sender, cmid)`` aside."""
    first: dict[tuple[int, str], int] = {}
    repeats: dict[int, int] = {}
    for i, send in enumerate(sends):
        key = (send.sender, send.cmid)
        if key in first:
            repeats[i] = first[key]
        else:
            first[key] = i
    order = sorted(first.values(), key=lambda i: sends[i].cid)
    return SendPlan(order, repeats)


def repeat_outcome(
    repeat: SendRequest, reply: Replier, first: SendRequest, outcome: SendOutcome
) -> SendOutcome:
    """A repeat of ``first`` (outcome ``outcome``) in one batch: a resend of the same message
    answers as ``first`` did (a stored one with ``dup``), another message is a conflict."""
    if (repeat.cid, repeat.body, repeat.kind) != (first.cid, first.body, first.kind):
        return SendOutcome(repeat, reply, error=Err.CMID_CONFLICT)
    if outcome.stored is None:
        return SendOutcome(repeat, reply, error=outcome.error)
    stored = outcome.stored
    return SendOutcome(repeat, reply, Stored(stored.id, stored.seq, stored.time_ms, dup=True))


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
        wait_s: float = 0.0,
        fill: int = FILL,
    ) -> None:
        self.pool, self.batch_max, self.timeout_s = pool, batch_max, timeout_s
        self.on_done, self.max_queue, self.flushers = on_done, max_queue, flushers
        self.wait_s, self.fill = wait_s, min(fill, batch_max)
        self._queues: list[list[Item]] = [[] for _ in range(flushers)]
        self._wakes = [asyncio.Event() for _ in range(flushers)]
        #: Set when a lane waiting for its batch to fill has ``fill`` items (see :meth:`_fill`).
        self._filled = [asyncio.Event() for _ in range(flushers)]
        self._filling = [False] * flushers
        #: Per lane: sends per second seen by the last flushes (smoothed), and when it began.
        self._rate = [0.0] * flushers
        self._began = [0.0] * flushers
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
        queue = self._queues[lane]
        queue.append((request, reply))
        self._idle.clear()
        self._wakes[lane].set()
        if self._filling[lane] and len(queue) >= self.fill:
            self._filled[lane].set()

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
            if self.wait_s and len(queue) < self.fill:
                await self._fill(lane)
                queue = self._queues[lane]
            now = time.perf_counter()
            if self._began[lane]:
                rate = min(len(queue), self.batch_max) / max(now - self._began[lane], 1e-6)
                self._rate[lane] = (self._rate[lane] + rate) / 2
            self._began[lane] = now
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

    async def _fill(self, lane: int) -> None:
        """Wait at most ``wait_s`` for ``fill`` items, if the lane's rate says more are coming.

        At a moderate rate a batch is a handful of sends (those that arrived during the last
        commit), and each call has a fixed cost in the node and in PostgreSQL that a larger batch
        shares. Waiting only pays when another send is expected within the wait (rate times wait
        of at least one); at a low rate a lone send is flushed at once.
        """
        if self._rate[lane] * self.wait_s < 1:
            return
        filled = self._filled[lane]
        self._filling[lane] = True
        try:
            async with asyncio.timeout(self.wait_s):
                await filled.wait()
        except TimeoutError:
            pass
        finally:
            self._filling[lane] = False
            filled.clear()

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
        requests = [r for r, _ in batch if isinstance(r, SendRequest)]
        plan = plan_sends(requests)
        sends = [requests[i] for i in plan.order]
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
        return self._outcomes(batch, plan, rows)

    def _outcomes(
        self, batch: list[Item], plan: SendPlan, rows: list[asyncpg.Record]
    ) -> list[Outcome]:
        """One outcome per item of ``batch``, in its order, from the function's rows."""
        send_at = [i for i, (r, _) in enumerate(batch) if isinstance(r, SendRequest)]
        read_at = [i for i, (r, _) in enumerate(batch) if isinstance(r, ReadRequest)]
        outcomes: list[Outcome | None] = [None] * len(batch)
        for op, ord_, status, message_id, seq, time_ms in rows:
            if op == "s":
                at = send_at[plan.order[ord_ - 1]]
                request, reply = batch[at]
                assert isinstance(request, SendRequest)
                if status in (BatchStatus.STORED_NOW, BatchStatus.STORED_BEFORE):
                    dup = status == BatchStatus.STORED_BEFORE
                    stored = Stored(message_id, seq, time_ms, dup)
                    outcomes[at] = SendOutcome(request, reply, stored)
                    self.committed += not dup
                else:
                    error = REFUSALS[BatchStatus(status)]
                    outcomes[at] = SendOutcome(request, reply, error=error)
            else:
                at = read_at[ord_ - 1]
                request, reply = batch[at]
                assert isinstance(request, ReadRequest)
                if status == BatchStatus.STORED_NOW:
                    outcomes[at] = ReadOutcome(request, reply, seq=seq)
                else:
                    error = REFUSALS[BatchStatus(status)]
                    outcomes[at] = ReadOutcome(request, reply, error=error)
        for repeat, first in plan.repeats.items():
            request, reply = batch[send_at[repeat]]
            first_outcome = outcomes[send_at[first]]
            assert isinstance(request, SendRequest) and isinstance(first_outcome, SendOutcome)
            outcomes[send_at[repeat]] = repeat_outcome(
                request, reply, first_outcome.request, first_outcome
            )
        assert all(o is not None for o in outcomes), "mm_commit_batch left an item unanswered"
        return [o for o in outcomes if o is not None]

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
