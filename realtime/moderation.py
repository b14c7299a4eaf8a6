"""The send path's content filter and low-trust daily cap, between the protocol and the writer.

Owns, for one node: the compiled :class:`~common.moderation.Matcher` (loaded from PostgreSQL at
start with :data:`~common.moderation.LOAD_RULES_SQL`, reloaded on ``ModerationChanged`` and
after a safety-stream outage, retried in the background while PostgreSQL is down; a failed
reload keeps the previous matcher), the check of every ``send`` body before it is queued to the
batch writer, the moderation log, and the daily message cap of low-trust users.

- ``reject``: the send is answered with ``content_rejected`` and nothing is stored; the log row
  and the trust move (``content_rejected``, :data:`~common.trust.APPLY_TRUST_SQL`) are written
  by a background task, in batches, off the hot path. ``warn``: the send goes on, a log row is
  written the same way. Log rows hold the matched *term* only, never the body.
- The cap: the trust score is read at authentication (``users.trust_score``, with the token
  version); a user below :data:`~common.trust.LOW_TRUST_THRESHOLD` gets
  :func:`~common.trust.daily_message_cap` sends per UTC day, counted in Redis under
  :func:`~common.rediskeys.daily_counter_key`. Capped users' sends go through one FIFO worker (one
  pipelined INCR round trip per batch), so their order is kept; past the cap the answer is
  ``daily_cap``. Every send the filter lets through counts, resends included. If Redis cannot
  count, the send goes through (logged): an outage must not silence every low-trust user.

It must not await on a socket; asyncpg and redis exceptions stay inside this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Final

import asyncpg

from common.codes import Err
from common.moderation import INSERT_LOG_SQL, LOAD_RULES_SQL, Matcher, Verdict, compile_rules
from common.redisclient import redis_client
from common.redisedge import REDIS_FAILURES
from common.rediskeys import daily_counter_key
from common.tasks import cancel_and_wait
from common.trust import APPLY_TRUST_SQL, TRUST_DELTAS, daily_message_cap
from realtime.batch import BatchWriter
from realtime.domain import Replier, SendOutcome, SendRequest, UserState
from realtime.store import UNAVAILABLE_ERRORS

log = logging.getLogger("realtime.moderation")

#: The moderation_log ``source`` of realtime messages.
SOURCE: Final = "message"
LOG_QUEUE_MAX: Final = 10_000
LOG_BATCH_MAX: Final = 500
CAP_QUEUE_MAX: Final = 10_000
#: Capped users remembered (FIFO beyond): only low-trust users are kept at all.
CAPS_MAX: Final = 100_000
COUNTER_TTL_S: Final = 2 * 24 * 3600
RELOAD_RETRY_S: Final = 5.0


class ModerationGate:
    """Checks sends before the batch writer; see the module docstring."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        redis_url: str,
        *,
        writer: BatchWriter,
        node_id: str,
        timeout_s: float,
    ) -> None:
        self.pool, self.writer, self.timeout_s = pool, writer, timeout_s
        self.redis = redis_client(
            redis_url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            client_name=f"rt:{node_id}:moderation",
        )
        self.matcher: Matcher = compile_rules(())
        self.loaded = False
        self.caps: dict[int, int] = {}
        self.rejected = self.warned = self.capped = self.log_dropped = 0
        self._log: list[tuple[int, Verdict]] = []
        self._log_wake = asyncio.Event()
        self._capq: list[tuple[SendRequest, Replier, int]] = []
        self._cap_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reloading: asyncio.Lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._log_loop(), name="moderation-log"),
            asyncio.create_task(self._cap_loop(), name="moderation-cap"),
            asyncio.create_task(self._load_until_loaded(), name="moderation-load"),
        ]

    async def close(self) -> None:
        """Write what the log still holds (bounded), then stop."""
        if self._log:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._write_log(), self.timeout_s)
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        # Sends still waiting for the counter were never stored: the clients resend them.
        for request, reply, _cap in self._capq:
            reply.send_finished(SendOutcome(request, reply, error=Err.DB_UNAVAILABLE))
        self._capq = []
        await self.redis.aclose()

    # -- the filter --------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Load and compile the word list; on failure keep the current matcher (False)."""
        async with self._reloading:
            try:
                async with self.pool.acquire(timeout=self.timeout_s) as con:
                    rows = await con.fetch(LOAD_RULES_SQL)
            except UNAVAILABLE_ERRORS as exc:
                log.warning("moderation rules not loaded", extra={"error": type(exc).__name__})
                return False
            # A Record is indexable like the tuples compile_rules reads.
            matcher = compile_rules(tuple(row) for row in rows)
            if matcher.errors:
                log.warning("moderation rules skipped", extra={"n": len(matcher.errors)})
            self.matcher, self.loaded = matcher, True
            return True

    async def _load_until_loaded(self) -> None:
        for _attempt in range(100_000):
            if self.loaded or await self.reload():
                return
            await asyncio.sleep(RELOAD_RETRY_S)

    # -- authentication ----------------------------------------------------------------------

    def note_user(self, user: int, state: UserState | None) -> None:
        """Remember the daily cap of ``user`` from the row read at authentication."""
        if state is None:
            return  # PostgreSQL down: keep what we knew
        cap = daily_message_cap(state.trust_score)
        if cap is None:
            self.caps.pop(user, None)
            return
        self.caps.pop(user, None)
        self.caps[user] = cap
        if len(self.caps) > CAPS_MAX:
            del self.caps[next(iter(self.caps))]

    # -- the send path -----------------------------------------------------------------------

    def take(self, request: SendRequest, reply: Replier) -> Err | bool:
        """Check one send: the error to refuse it with now (the caller answers it), True when
        it was queued for the cap worker (answered from there), False when it goes on."""
        verdict = self.matcher.check(request.body)
        if verdict.action != "allow":
            self._queue_log(request.sender, verdict)
            if verdict.action == "reject":
                self.rejected += 1
                return Err.CONTENT_REJECTED
            self.warned += 1
        cap = self.caps.get(request.sender)
        if cap is None:
            return False
        if len(self._capq) >= CAP_QUEUE_MAX:
            return Err.RATE_LIMITED
        self._capq.append((request, reply, cap))
        self._cap_wake.set()
        return True

    async def _cap_loop(self) -> None:
        while True:
            if not self._capq:
                self._cap_wake.clear()
                await self._cap_wake.wait()
            batch, self._capq = self._capq, []
            counts = await self._count(batch)
            for (request, reply, cap), count in zip(batch, counts, strict=True):
                if count is not None and count > cap:
                    self.capped += 1
                    reply.send_finished(SendOutcome(request, reply, error=Err.DAILY_CAP))
                else:
                    self.writer.submit(request, reply)

    async def _count(self, batch: list[tuple[SendRequest, Replier, int]]) -> list[int | None]:
        day = dt.datetime.now(dt.UTC).date()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for request, _reply, _cap in batch:
                    key = daily_counter_key(request.sender, day)
                    pipe.incr(key)
                    pipe.expire(key, COUNTER_TTL_S)
                results = await asyncio.wait_for(pipe.execute(), self.timeout_s)
        except REDIS_FAILURES as exc:
            log.warning("daily cap not counted", extra={"error": type(exc).__name__})
            return [None] * len(batch)
        return [int(results[2 * i]) for i in range(len(batch))]

    # -- the moderation log ------------------------------------------------------------------

    def _queue_log(self, user: int, verdict: Verdict) -> None:
        if len(self._log) >= LOG_QUEUE_MAX:
            self.log_dropped += 1
            return
        self._log.append((user, verdict))
        self._log_wake.set()

    async def _log_loop(self) -> None:
        while True:
            if not self._log:
                self._log_wake.clear()
                await self._log_wake.wait()
            await self._write_log()

    async def _write_log(self) -> None:
        batch, self._log = self._log[:LOG_BATCH_MAX], self._log[LOG_BATCH_MAX:]
        rows = [(user, SOURCE, v.category or "", v.action, v.matched or "") for user, v in batch]
        moves = [
            (user, TRUST_DELTAS["content_rejected"], "content_rejected")
            for user, v in batch
            if v.action == "reject"
        ]
        try:
            async with self.pool.acquire(timeout=self.timeout_s) as con, con.transaction():
                await con.executemany(INSERT_LOG_SQL, rows)
                if moves:
                    await con.executemany(APPLY_TRUST_SQL, moves)
        except UNAVAILABLE_ERRORS as exc:
            self.log_dropped += len(batch)
            log.warning("moderation log not written", extra={"error": type(exc).__name__})
            await asyncio.sleep(1.0)
        except asyncpg.PostgresError as exc:
            self.log_dropped += len(batch)
            log.error("moderation log refused", extra={"error": type(exc).__name__})
