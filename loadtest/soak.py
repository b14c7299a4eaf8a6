"""The bounded soak (issue 20): steady paced chat and churning idle sockets, sampled.

Owns one soak run against running nodes: the paced generator's pairs
(:func:`loadtest.generator.open_pairs`, sending at a fixed rate through
:func:`~loadtest.generator.send`), the idle sockets of the ``idle`` figure
(:class:`~loadtest.generator.IdleSockets`), one of which reconnects every ``1/churn_per_s``
seconds in turn, and a sampler that records, every ``sample_s`` seconds, the node's RSS and
open descriptors (``/proc``), Redis memory (``INFO``), the size of every table and its indexes
(PostgreSQL's size functions) and the latencies of the interval. It ends with the chat run's
end-of-run check (:func:`~loadtest.generator.finish`). Every loop is bounded in count and time.
It never starts or stops a server (:mod:`loadtest.bench` does) and judges nothing itself
(:mod:`loadtest.soak_report` does).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import asyncpg
from redis.asyncio import Redis

from common.settings import Settings, get_settings
from common.tasks import cancel_and_wait
from loadtest.generator import (
    IdleSockets,
    Run,
    finish,
    idle_sockets,
    node_gc_pauses,
    open_pairs,
    rss_kb,
    send,
)
from loadtest.report import Latency

#: Every size query and Redis call is bounded: a stuck service must not stall the sampler.
QUERY_TIMEOUT_S: Final = 10.0
#: Each table's heap and index bytes; a partitioned table (``messages``, migration 0007) as the
#: sum of its partitions, under its own name.
TABLE_SIZES: Final = """
SELECT c.relname, sum(pg_table_size(coalesce(t.relid, c.oid)))::bigint,
       sum(pg_indexes_size(coalesce(t.relid, c.oid)))::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL pg_partition_tree(c.oid) t ON t.isleaf
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = 'public'
GROUP BY c.relname
ORDER BY c.relname
"""


@dataclass(frozen=True, slots=True)
class SoakOptions:
    """The issue's soak by default: 30 minutes, 2,000 msg/s over 100 pairs, 5,000 idle."""

    duration_s: float = 1800.0
    rate: float = 2000.0
    pairs: int = 100
    idle: int = 5000
    churn_per_s: float = 10.0
    sample_s: float = 60.0
    #: Idle sockets per user, below the node's per-user limit so a reconnect never meets it.
    per_user: int = 50
    window: int = 16
    body_chars: int = 100
    warmup_s: float = 2.0


@dataclass
class Churn:
    """Reconnects done and failed (the failures' reasons are in the idle run's errors)."""

    done: int = 0
    failed: int = 0

    async def run(self, idle: IdleSockets, per_s: float, duration_s: float) -> None:
        """Reconnect socket k % n at k / per_s seconds, until ``duration_s``."""
        if per_s <= 0 or not idle.clients:
            return
        start = time.perf_counter()
        for k in range(math.floor(duration_s * per_s)):
            delay = start + (k + 1) / per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if await idle.reconnect(k % len(idle.clients)):
                self.done += 1
            else:
                self.failed += 1


@dataclass
class Sampler:
    """One row of figures every ``sample_s`` seconds while the soak sends."""

    node_pid: int
    node_url: str
    chat: Run
    idle: IdleSockets
    churn: Churn
    db: asyncpg.Connection
    redis: Redis
    samples: list[dict[str, Any]] = field(default_factory=list)
    _marks: tuple[float, int, int, int] = (0.0, 0, 0, 0)

    async def run(self, sample_s: float, duration_s: float) -> None:
        """Sample at 0, ``sample_s``, 2 ``sample_s``, ... up to ``duration_s``."""
        start = time.perf_counter()
        self._marks = (start, 0, 0, 0)
        for k in range(math.floor(duration_s / sample_s + 1e-9) + 1):
            delay = start + k * sample_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.samples.append(await self.sample(time.perf_counter() - start))

    async def sample(self, t_s: float) -> dict[str, Any]:
        run = self.chat
        now = time.perf_counter()
        last_t, last_delivered, last_deliv, last_ack = self._marks
        deliveries = run.deliv_lat[last_deliv:]
        acks = run.ack_lat[last_ack:]
        self._marks = (now, run.delivered_count, len(run.deliv_lat), len(run.ack_lat))
        tables = await self.db.fetch(TABLE_SIZES, timeout=QUERY_TIMEOUT_S)
        memory = await asyncio.wait_for(self.redis.info("memory"), QUERY_TIMEOUT_S)
        keys = await asyncio.wait_for(self.redis.dbsize(), QUERY_TIMEOUT_S)
        # The node's full collections so far: its policy runs them rarely, and cyclic garbage
        # waits for them, so the RSS curve reads against this count.
        pauses = await asyncio.to_thread(node_gc_pauses, self.node_url)
        return {
            "t_s": round(t_s, 1),
            "node_rss_kb": rss_kb(self.node_pid),
            "node_fds": len(os.listdir(f"/proc/{self.node_pid}/fd")),
            "node_full_collections": int(pauses["2"][0]) if pauses and "2" in pauses else None,
            "redis_used_memory": int(memory["used_memory"]),
            "redis_keys": int(keys),
            "pg_tables": {str(r[0]): [int(r[1]), int(r[2])] for r in tables},
            "sent": len(run.sent_at),
            "acked": len(run.acked),
            "delivered": run.delivered_count,
            # The interval's own rate and latencies: none in the first sample, which has no
            # interval before it (nor latencies before the warm-up ends).
            "delivered_per_s": (
                round((run.delivered_count - last_delivered) / (now - last_t), 1)
                if self.samples
                else None
            ),
            "delivery": asdict(Latency.of(deliveries)) if deliveries else None,
            "ack": asdict(Latency.of(acks)) if acks else None,
            "idle_held": self.idle.held(),
            "reconnects": self.churn.done,
            "reconnect_failures": self.churn.failed,
        }


async def soak(
    options: SoakOptions,
    *,
    urls: Sequence[str],
    node_pid: int,
    settings: Settings | None = None,
    on_window: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one soak and return its record: options, samples, churn, the chat report (with the
    end-of-run check) and what the idle sockets met (errors, closes by the node)."""
    o, settings = options, settings or get_settings()
    session = await open_pairs(
        target="mergemeet",
        urls=urls,
        pairs=o.pairs,
        window=o.window,
        # Every send the schedule can make, and one second more: the cap never binds.
        messages=math.ceil(o.rate * (o.duration_s + 1)),
        body_chars=o.body_chars,
        settings=settings,
    )
    idle = await idle_sockets(
        target="mergemeet", urls=urls, connections=o.idle, per_user=o.per_user, settings=settings
    )
    await idle.connect()
    opened = idle.opened()
    idle.run.sending = True  # closes by the node from here on are counted
    churn = Churn()
    db = await asyncpg.connect(settings.asyncpg_dsn, timeout=QUERY_TIMEOUT_S)
    redis = Redis.from_url(settings.redis_url)
    sampler = Sampler(node_pid, session.urls[0], session.run, idle, churn, db, redis)
    tasks = [
        asyncio.create_task(churn.run(idle, o.churn_per_s, o.duration_s)),
        asyncio.create_task(sampler.run(o.sample_s, o.duration_s)),
    ]
    try:
        window = await send(
            session, duration_s=o.duration_s, rate=o.rate, warmup_s=o.warmup_s, on_window=on_window
        )
        # The last sample is due as sending ends; the drain after it has given it time.
        await asyncio.wait_for(asyncio.shield(tasks[1]), QUERY_TIMEOUT_S)
    finally:
        await cancel_and_wait(*tasks)
        await db.close()
        await redis.aclose()
    idle.run.sending = False
    idle.close()
    report = await finish(session, window, rate=o.rate, settings=settings)
    return {
        "options": asdict(o),
        "samples": sampler.samples,
        "idle": {
            "requested": o.idle,
            "opened": opened,
            "reconnects": churn.done,
            "reconnect_failures": churn.failed,
            "errors": dict(idle.run.errors),
            "closes": dict(idle.run.closes),
        },
        "chat": report.as_dict(),
    }
