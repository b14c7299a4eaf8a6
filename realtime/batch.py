"""Group-commit persistence of sends and read receipts (asyncpg, one round trip per batch).

Owns the write path to PostgreSQL. Requests queue without awaiting on one queue; at most
``flushers`` commits (two by default) are in flight, and no two of them share a conversation
(:class:`BatchWriter`). A second commit starts beside the first only for a full batch of other
conversations, or beside a commit that is slow (an fsync stall must not hold every send), so at
a moderate rate a batch is everything one commit cycle gathers, and at peak two commits (and
their fsyncs) overlap, as does the node's work on one batch (arrays before, acks and fan-out
after) with the other's. Each commit keeps a pooled connection between batches (no acquire and
no reset query per batch) and gives it back after any failure.

A batch is one call of the ``mm_commit_batch`` function (:data:`COMMIT_FUNCTION`, defined by the
newest write-path migration), outside any explicit transaction, so the call is the whole
transaction and one round trip: it locks the batch's conversation rows in id order (two nodes
never deadlock), numbers the new messages after each conversation's top ``seq`` (read from the
messages key under that lock), inserts them and applies read receipts, and returns after its
COMMIT. It updates no other row per message: ``last_seq`` and unread counts are derived at read
time. Outcomes are handed to ``on_done`` only then: that is what makes an ack mean "durable".

Resends are rare, so the first call for a batch does not look for them: the resend key's unique
index is the check. A batch holding a resend (or a key reused with another body) fails that call
with ``unique_violation``, which stores nothing, and is called again with ``probe``: then the
function reads the keys first and answers resends with their original place (another body or
kind is a conflict). ``reprobes`` counts those second calls.

The function numbers rows in the order it gets them, so the writer hands it each batch grouped by
conversation (arrival order kept within each) and settles a ``(cid, sender, cmid)`` repeated
inside one batch itself (:func:`plan_sends`): the first is stored, the repeats answer as its
resends. That is the resend key (migration 0007): a resend names the conversation of its first
send, so one sender's ``cmid`` in two conversations is two messages.

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
from common.tasks import cancel_and_wait
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
#: own transaction and answers only after its COMMIT. ``$9``: probe for resends first.
COMMIT_SQL: Final = """
SELECT op, ord, status, msg_id, seq, time_ms
FROM mm_commit_batch($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::boolean)
"""

STATEMENTS: Final = (COMMIT_SQL,)
MAX_RACE_RETRIES: Final = 3
#: A batch this large is flushed without waiting (see ``BatchWriter._fill``), and may commit
#: beside one in flight.
FILL: Final = 32
#: A commit in flight longer than this lets the next batch commit beside it whatever its size
#: (a commit here takes 1-2 ms; an fsync stall takes tens).
SLOW_COMMIT_S: Final = 0.004

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
    ``(cid, sender, cmid)`` -> index of that first one.
    """

    order: list[int]
    repeats: dict[int, int]


def plan_sends(sends: Sequence[SendRequest]) -> SendPlan:
    """Group by conversation (a stable sort) and set repeated ``(cid, sender, cmid)`` aside."""
    first: dict[tuple[int, int, str], int] = {}
    repeats: dict[int, int] = {}
    for i, send in enumerate(sends):
        key = (send.cid, send.sender, send.cmid)
        if key in first:
            repeats[i] = first[key]
        else:
            first[key] = i
    order = sorted(first.values(), key=lambda i: sends[i].cid)
    return SendPlan(order, repeats)


def repeat_outcome(
    repeat: SendRequest, reply: Replier, first: SendRequest, outcome: SendOutcome
) -> SendOutcome:
    """A repeat of ``first``'s key (outcome ``outcome``) in one batch: a resend of the same
    message answers as ``first`` did (a stored one with ``dup``), another body or kind is a
    conflict."""
    if (repeat.body, repeat.kind) != (first.body, first.kind):
        return SendOutcome(repeat, reply, error=Err.CMID_CONFLICT)
    if outcome.stored is None:
        return SendOutcome(repeat, reply, error=outcome.error)
    stored = outcome.stored
    return SendOutcome(repeat, reply, Stored(stored.id, stored.seq, stored.time_ms, dup=True))


class _CommitUnknown(Exception):
    """The connection failed while the call was in flight: the batch may or may not be stored."""


Connection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"


class BatchWriter:
    """Queue sends and reads; commit them in batches and report each batch once committed.

    One queue, and at most ``flushers`` commits in flight, which never share a conversation: a
    queued item whose conversation a commit in flight holds waits for that commit's outcomes to
    be reported. So one conversation's batches commit, are acked and are fanned out one after
    the other, in ``seq`` order, while batches of other conversations overlap them.

    A commit starts at once when none is in flight (after a bounded wait to fill, see
    :meth:`_fill`); while one is in flight the next batch fills behind it, and another commit
    starts beside it only once the queue holds a full batch (``fill``) of free conversations, or
    once the oldest commit in flight has run for ``SLOW_COMMIT_S``. At peak the conversations
    split in parts that take turns (see :meth:`_take`).
    """

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
        self._queue: list[Item] = []
        #: Conversations of the commits in flight, and the queued items outside them.
        self._busy: set[int] = set()
        self._free = 0
        #: Set by submit (the first free item, and the ``fill``-th) and by a commit ending.
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._dispatcher: asyncio.Task[None] | None = None
        #: The commits in flight, with when each started.
        self._commits: dict[asyncio.Task[None], float] = {}
        #: Sends per second seen by the last batches (smoothed), and when the last one began.
        self._rate = 0.0
        self._began = 0.0
        #: Connections kept between batches (at most one per commit in flight).
        self._held: list[Connection] = []
        self.batches = 0
        self.last_flush_s = 0.0
        self.committed = 0
        #: Calls made again with ``probe`` after a unique violation (a resend reached the table).
        self.reprobes = 0

    def submit(self, request: SendRequest | ReadRequest, reply: Replier) -> None:
        """Queue without awaiting; the outcome reaches ``on_done`` after the commit."""
        if self.pending >= self.max_queue:
            self.on_done([_failed((request, reply), Err.RATE_LIMITED)])
            return
        self._queue.append((request, reply))
        self._idle.clear()
        if request.cid not in self._busy:
            self._free += 1
            if self._free == 1 or self._free == self.fill:
                self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name="batch-writer")

    async def stop(self, drain_timeout_s: float) -> None:
        """Let queued requests commit (bounded by ``drain_timeout_s``), then stop."""
        if self._dispatcher is not None and not self._dispatcher.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), drain_timeout_s)
        await cancel_and_wait(self._dispatcher, *self._commits)
        self._dispatcher, self._commits = None, {}
        self._busy, self._free = set(), 0
        held, self._held = self._held, []
        for con in held:
            await self._release(con)
        leftovers, self._queue = self._queue, []
        if leftovers:
            # The writer is gone: these were never stored, the clients resend after reconnecting.
            self.on_done([_failed(item, Err.DB_UNAVAILABLE) for item in leftovers])

    async def _dispatch(self) -> None:
        while True:
            wait = self._hold_for()
            if wait is not None:
                self._wake.clear()
                if wait == 0.0:
                    await self._wake.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._wake.wait()
                continue
            if not self._commits and self.wait_s and len(self._queue) < self.fill:
                await self._fill()
            now = time.perf_counter()
            batch = self._take()
            if self._began:
                rate = len(batch) / max(now - self._began, 1e-6)
                self._rate = (self._rate + rate) / 2
            self._began = now
            task = asyncio.create_task(self._commit_and_report(batch))
            self._commits[task] = now

    def _hold_for(self) -> float | None:
        """None: start a commit now; else how long to wait for a wake-up (0.0: until one)."""
        if not self._free or len(self._commits) >= self.flushers:
            return 0.0
        if not self._commits or self._free >= self.fill:
            return None
        slow_at = min(self._commits.values()) + SLOW_COMMIT_S
        wait = slow_at - time.perf_counter()
        return wait if wait > 0 else None

    def _take(self) -> list[Item]:
        """The next batch: up to ``batch_max`` queued items, oldest first, of free conversations
        (the others stay queued, in order); their conversations become busy.

        At peak (nothing in flight and two full batches of free items queued) the batch takes
        only the conversations whose ``cid % flushers`` is the oldest item's, so the others
        commit beside it at once; from then on each part's next batch fills while the other
        commits.
        """
        busy = self._busy
        split = self.flushers > 1 and not self._commits and self._free >= 2 * self.fill
        if not busy and not split:
            batch = self._queue[: self.batch_max]
            del self._queue[: self.batch_max]
        else:
            part = next(r.cid for r, _ in self._queue if r.cid not in busy) % self.flushers
            batch, kept = [], []
            for item in self._queue:
                cid = item[0].cid
                if (
                    len(batch) < self.batch_max
                    and cid not in busy
                    and (not split or cid % self.flushers == part)
                ):
                    batch.append(item)
                else:
                    kept.append(item)
            self._queue = kept
        busy.update(request.cid for request, _ in batch)
        self._recount()
        return batch

    def _recount(self) -> None:
        busy = self._busy
        self._free = sum(1 for request, _ in self._queue if request.cid not in busy)

    async def _commit_and_report(self, batch: list[Item]) -> None:
        started = time.perf_counter()
        try:
            outcomes = await self.flush(batch)
            # Read by on_done (the metrics hook) for the batch it is handed.
            self.last_flush_s = time.perf_counter() - started
            failpoints.hit("after_commit_before_fanout")
            self.batches += 1
            try:
                self.on_done(outcomes)
            except Exception:
                log.exception("delivering batch outcomes failed")
        finally:
            # Only now may the next batch of these conversations start (see the class docstring).
            task = asyncio.current_task()
            if task is not None:
                self._commits.pop(task, None)
            self._busy.difference_update(request.cid for request, _ in batch)
            self._recount()
            if not self._commits and not self._queue:
                self._idle.set()
            self._wake.set()

    async def _fill(self) -> None:
        """Wait at most ``wait_s`` for ``fill`` items, if the recent rate says more are coming.

        At a moderate rate a batch is a handful of sends (those that arrived during the last
        commit), and each call has a fixed cost in the node and in PostgreSQL that a larger batch
        shares. Waiting only pays when another send is expected within the wait (rate times wait
        of at least one); at a low rate a lone send is flushed at once.
        """
        if self._rate * self.wait_s < 1:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.wait_s):
                while len(self._queue) < self.fill:
                    await self._wake.wait()
                    self._wake.clear()

    async def flush(self, batch: list[Item]) -> list[Outcome]:
        """Commit ``batch`` and return one outcome per item, in order; never raises."""
        probe = False
        for _attempt in range(MAX_RACE_RETRIES):
            try:
                return await self._commit(batch, probe=probe)
            except asyncpg.UniqueViolationError:
                # A resend (or a reused key) met the resend key: nothing was stored, and the call
                # with probe answers it with its stored place. With probe, only a writer that
                # skipped the conversation's row lock can cause it; the next call sees its row.
                self.reprobes += not probe
                probe = True
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

    async def _commit(self, batch: list[Item], *, probe: bool) -> list[Outcome]:
        """One ``mm_commit_batch`` call on this lane's connection: one round trip, one COMMIT.
        ``probe``: look the batch's resend keys up before inserting (see the module docstring)."""
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
                probe,
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
