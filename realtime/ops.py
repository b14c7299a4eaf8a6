"""The ops surface of a node: ``/healthz``, ``/readyz``, ``/metrics`` and the heartbeat's load.

Owns the plain HTTP routes answered in the WebSocket handshake hook (``process_request``) and
the figures each heartbeat publishes for the ops page (messages/s, batch size, commit time,
delivery lag, in :class:`common.cluster.NodeInfo`). ``/readyz`` is 200 only when Redis answers
a PING, PostgreSQL a ``SELECT 1`` (each under the I/O timeout) and the delivery-stream reader
is alive and has read recently, and never while the node drains. Every other request falls
through to the Origin check of :mod:`realtime.server`.

It must not decide anything about frames or sockets; redis and asyncpg failures are caught
here and turned into a "not ready" line.
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from prometheus_client import CollectorRegistry
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from common.redisclient import RedisClient, ping
from common.redisedge import REDIS_FAILURES
from common.settings import Settings
from realtime.batch import BatchWriter
from realtime.broker import RedisBroker
from realtime.metrics import CONTENT_TYPE, TALLY, Gauges, Tally, build_registry, render
from realtime.node import Node
from realtime.store import UNAVAILABLE_ERRORS

log = logging.getLogger("realtime.ops")

ProcessRequest = Callable[[object, Request], Response | None]


def respond(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
            # websockets closes the TCP connection after a handshake-hook response; saying so
            # stops keep-alive clients (httpx, Prometheus) from reusing a dead connection.
            "Connection": "close",
        }
    )
    return Response(status.value, status.phrase, headers, body)


def text(status: http.HTTPStatus, body: str) -> Response:
    return respond(status, body.encode(), "text/plain; charset=utf-8")


@dataclass
class Ops:
    """The node's HTTP routes; ``fallback`` answers every other request (Origin check)."""

    redis: RedisClient
    pool: asyncpg.Pool[asyncpg.Record]
    broker: RedisBroker
    registry: CollectorRegistry
    fallback: ProcessRequest
    timeout_s: float
    draining: bool = False

    def process_request(
        self, connection: object, request: Request
    ) -> Response | Awaitable[Response | None] | None:
        path = request.path.partition("?")[0]
        if path == "/healthz":
            return text(http.HTTPStatus.OK, "ok\n")
        if path == "/metrics":
            return respond(http.HTTPStatus.OK, render(self.registry), CONTENT_TYPE)
        if path == "/readyz":
            return self.readyz()
        return self.fallback(connection, request)

    async def readyz(self) -> Response:
        checks = list(await asyncio.gather(self._redis(), self._postgres()))
        checks.append(self._reader())
        if self.draining:
            checks.append("draining")
        failed = [c for c in checks if c]
        if failed:
            return text(http.HTTPStatus.SERVICE_UNAVAILABLE, "".join(f"{c}\n" for c in failed))
        return text(http.HTTPStatus.OK, "ready\n")

    async def _redis(self) -> str:
        try:
            await asyncio.wait_for(ping(self.redis), self.timeout_s)
        except REDIS_FAILURES as exc:
            log.warning("readiness: redis", extra={"error": type(exc).__name__})
            return f"redis: {type(exc).__name__}"
        return ""

    async def _postgres(self) -> str:
        try:
            async with self.pool.acquire(timeout=self.timeout_s) as con:
                await con.fetchval("SELECT 1", timeout=self.timeout_s)
        except (*UNAVAILABLE_ERRORS, asyncpg.PostgresError) as exc:
            log.warning(
                "readiness: postgres", extra={"error": type(exc).__name__, "backend": "postgres"}
            )
            return f"postgres: {type(exc).__name__}"
        return ""

    def _reader(self) -> str:
        # A live reader returns from XREAD BLOCK at least every block_ms.
        allowed = self.broker.block_ms / 1000 + 2 * self.timeout_s
        if not self.broker.reading:
            return "delivery reader: not running"
        if time.monotonic() - self.broker.read_ok_at > allowed:
            return "delivery reader: no successful read"
        return ""


@dataclass
class Load:
    """What the heartbeat adds to :class:`~common.cluster.NodeInfo`: rates since the last beat."""

    writer: BatchWriter
    broker: RedisBroker
    tally: Tally = field(default_factory=lambda: TALLY)
    _last: tuple[float, int, int, float, int] = field(default=(0.0, 0, 0, 0.0, 0))

    def __post_init__(self) -> None:
        self._last = self._sample()

    def _sample(self) -> tuple[float, int, int, float, int]:
        commit = self.tally.commit
        size = self.tally.batch_size
        return (
            time.monotonic(),
            self.writer.committed,
            int(size.total),
            commit.total,
            commit.count,
        )

    def __call__(self) -> dict[str, float]:
        now = self._sample()
        t0, committed0, requests0, commit_s0, batches0 = self._last
        t1, committed1, requests1, commit_s1, batches1 = now
        self._last = now
        batches = batches1 - batches0
        return {
            "messages_per_s": round((committed1 - committed0) / max(t1 - t0, 1e-3), 1),
            "batch_size_avg": round((requests1 - requests0) / batches, 1) if batches else 0.0,
            "commit_ms_avg": round((commit_s1 - commit_s0) * 1000 / batches, 2) if batches else 0.0,
            "delivery_lag_ms": round(self.broker.lag_s * 1000, 1),
        }


@dataclass
class NodeOps:
    """Metrics and the HTTP routes of one node, over its parts."""

    ops: Ops
    registry: CollectorRegistry

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        node: Node,
        broker: RedisBroker,
        writer: BatchWriter,
        pool: asyncpg.Pool[asyncpg.Record],
        fallback: ProcessRequest,
        open_connections: Callable[[], int],
    ) -> NodeOps:
        """``open_connections``: the WebSocket server's count of open connections,
        authenticated or not (``mm_rt_connections_open``)."""
        gauges = Gauges(
            open_connections=open_connections,
            sockets=lambda: node.hub.socket_count,
            users=lambda: node.hub.user_count,
            batch_pending=lambda: writer.pending,
            committed=lambda: writer.committed,
            batch_reprobes=lambda: writer.reprobes,
            slow_consumer_closes=lambda: node.slow_consumer_closes,
            delivery_lag_s=lambda: broker.lag_s,
            delivery_received=lambda: broker.received,
            publish_dropped=lambda: broker.dropped,
            draining=lambda: ops.draining,
            connect_reads=lambda: {
                "accounts": (node.store.accounts.calls, node.store.accounts.keys),
                "token_versions": (broker.version_reads.calls, broker.version_reads.keys),
            },
        )
        registry = build_registry(gauges)
        ops = Ops(broker.redis, pool, broker, registry, fallback, settings.realtime_io_timeout_s)
        return cls(ops, registry)
