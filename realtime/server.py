"""The realtime node's composition root: builds every part from settings, serves, shuts down.

:meth:`Services.build` is the one place the node is wired. It builds, in order: the key set
(public keys only), the asyncpg pool (lazy, so the node starts with PostgreSQL down), the store,
the safety state, the hub (gated by it), the Redis broker, presence, the offline
notifications, the fan-out, the after-commit step, the batch writer (handing its outcomes to
it), the heartbeat's load figures, the moderation gate, the node, the safety-events consumer,
the ops routes and the WebSocket server (uvloop, the ``websockets`` sans-I/O core driven from an
``asyncio.Protocol``: :mod:`realtime.wsserver`, :mod:`realtime.transport`) with ``/healthz``,
``/readyz`` and ``/metrics`` answered in the handshake hook. Each part gets its collaborators as
constructor arguments and nothing is assigned to a part after it is built (a test checks). Three
figures read parts built later, through a closure over the name (``commit_seconds`` the writer,
the broker's ``load`` the writer's counts, ``open_connections`` the server), because each of
those parts needs the reader first; they are only called once the node runs. The broker's
``on_delivery`` is the fan-out's ``on_remote`` the same way (the fan-out needs the broker), given
to the broker's constructor. Presence keeps its shared state in a ``RedisPresence`` and the
safety consumer reads a ``RedisSafetyFeed`` (the seams with in-memory twins in
:mod:`realtime.memory`). Every background task is owned by
a part that cancels and awaits it. SIGTERM drains, bounded by ``MM_REALTIME_DRAIN_S``: mark the node
unready, close every socket with 1012 (reconnect elsewhere; this also stops accepting), flush
the batch writer (sends in flight are committed; their clients settle them by resending the
same ``cmid``), settle pending presence graces, then stop the safety consumer, withdraw routes
and the node's heartbeat, and close the pool.

The offline-message notifications (``realtime/notices.py``) are built with the node and, on
the way out, write what they still hold after moderation, before the pool closes.

This module must not import FastAPI, SQLAlchemy or ``common.models`` (a test checks
``sys.modules``).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import os
import secrets
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
from websockets.http11 import Request, Response

from common.codes import Close
from common.logs import setup_logging
from common.settings import Settings
from common.tokens import keyset_from_settings
from realtime import gcpolicy
from realtime.aftercommit import AfterCommit
from realtime.batch import BatchWriter
from realtime.broker import Kind, RedisBroker, Scope
from realtime.connection import Connection
from realtime.fanout import Fanout
from realtime.hub import Hub
from realtime.moderation import ModerationGate
from realtime.node import Node
from realtime.notices import MessageNotices
from realtime.ops import Load, NodeOps, text
from realtime.presence import Presence
from realtime.presencebackend import RedisPresence
from realtime.protocol import Config
from realtime.safety import SafetyConsumer
from realtime.safetyfeed import RedisSafetyFeed
from realtime.safetystate import SafetyState
from realtime.sockets import memberships_of
from realtime.store import Store, create_pool
from realtime.transport import WsSocket
from realtime.wsserver import WsServer

log = logging.getLogger("realtime.server")


def make_process_request(
    allowed_origins: list[str],
) -> Callable[[object, Request], Response | None]:
    """The Origin allow-list, checked before the WebSocket handshake (the HTTP routes are
    in :class:`realtime.ops.Ops`, which falls back to this)."""
    allowed = frozenset(allowed_origins)

    def process_request(connection: object, request: Request) -> Response | None:
        origin = request.headers.get("Origin")
        # Browsers always send Origin; native clients send none and are not subject to CORS.
        if origin is not None and origin not in allowed:
            return text(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
        return None

    return process_request


def make_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def protocol_config(settings: Settings, node_id: str) -> Config:
    return Config(
        node_id=node_id,
        max_frame_bytes=settings.max_frame_bytes,
        max_body_chars=settings.max_body_chars,
        rate_per_s=settings.rate_per_s,
        rate_burst=settings.rate_burst,
        auth_timeout_s=settings.auth_timeout_s,
        reauth_before_s=settings.reauth_before_s,
        heartbeat_s=settings.heartbeat_s,
        sync_page_size=settings.sync_page_size,
    )


@dataclass
class Services:
    """Everything the node runs, in build order (shut down in reverse)."""

    pool: asyncpg.Pool[asyncpg.Record]
    store: Store
    broker: RedisBroker
    presence: Presence
    notices: MessageNotices
    writer: BatchWriter
    moderation: ModerationGate
    node: Node
    safety: SafetyConsumer
    ops: NodeOps
    server: WsServer

    @classmethod
    async def build(cls, settings: Settings) -> Services:
        node_id = settings.node_id or make_node_id()
        timeout = settings.realtime_io_timeout_s
        keys = keyset_from_settings(settings, with_private=False)
        pool = await create_pool(
            settings.asyncpg_dsn, max_size=settings.db_pool_size, timeout_s=timeout
        )
        # A quarter of the pool for authentication: a storm never starves the batch writer.
        store = Store(pool, timeout_s=timeout, account_calls=max(1, settings.db_pool_size // 4))
        safety_state = SafetyState()
        hub = Hub(max_per_user=settings.max_connections_per_user, gate=safety_state.admits)

        def on_delivery(users: Sequence[int], data: bytes, kind: Kind, scope: Scope) -> None:
            fanout.on_remote(users, data, kind, scope)  # built after the broker: it needs it

        broker = RedisBroker(
            settings.redis_url,
            node_id=node_id,
            address=settings.realtime_public_url,
            route_ttl_s=settings.presence_ttl_s,
            timeout_s=timeout,
            local_users=hub.users,
            stats=lambda: (hub.socket_count, hub.user_count),
            on_delivery=on_delivery,
            load=lambda: load(),
        )
        presence = Presence(
            RedisPresence(
                broker.redis,
                node_id=node_id,
                ttl_s=settings.presence_ttl_s,
                timeout_s=timeout,
                live=broker.live,
            ),
            hub=hub,
            broker=broker,
            store=store,
            view=memberships_of,
            ttl_s=settings.presence_ttl_s,
            grace_s=settings.presence_grace_s,
        )
        notices = MessageNotices(pool, timeout_s=timeout, is_local=hub.has)
        fanout = Fanout(hub=hub, broker=broker, presence=presence)
        after_commit = AfterCommit(
            fanout=fanout, notices=notices, commit_seconds=lambda: writer.last_flush_s
        )
        writer = BatchWriter(
            pool,
            batch_max=settings.batch_max,
            timeout_s=timeout,
            on_done=after_commit.on_outcomes,
            flushers=settings.batch_flushers,
            wait_s=settings.batch_wait_ms / 1000,
        )
        load = Load(writer, broker)
        moderation = ModerationGate(
            pool, settings.redis_url, writer=writer, node_id=node_id, timeout_s=timeout
        )
        node = Node(
            config=protocol_config(settings, node_id),
            keys=keys,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            hub=hub,
            broker=broker,
            store=store,
            writer=writer,
            after_commit=after_commit,
            fanout=fanout,
            presence=presence,
            safety=safety_state,
            send_gate=moderation.take,
            on_account=moderation.note_user,
            high_water=settings.outbound_high_water,
            sndbuf=settings.realtime_sndbuf_bytes,
        )
        safety = SafetyConsumer(
            node,
            RedisSafetyFeed(settings.redis_url, name=f"rt:{node_id}:safety", timeout_s=timeout),
            state=safety_state,
            reload_moderation=moderation.reload,
        )
        # Before the first socket: the filter (best effort; retried in the background) and the
        # safety stream's starting point (see realtime/safety.py).
        await moderation.reload()
        await safety.prime()
        ops = NodeOps.build(
            settings,
            node=node,
            broker=broker,
            writer=writer,
            pool=pool,
            fallback=make_process_request(settings.allowed_origins),
            open_connections=lambda: server.open_count,
        )

        def open_socket(sock: WsSocket) -> Connection:
            conn = Connection(sock, node)
            conn.start()
            return conn

        server = WsServer(
            open_socket,
            process_request=ops.ops.process_request,
            max_size=settings.max_frame_bytes,
            compression=settings.ws_compression,
            ping_interval_s=settings.heartbeat_s,
            ping_timeout_s=settings.heartbeat_s,
            close_timeout_s=settings.realtime_io_timeout_s * 2,
        )
        return cls(
            pool=pool,
            store=store,
            broker=broker,
            presence=presence,
            notices=notices,
            writer=writer,
            moderation=moderation,
            node=node,
            safety=safety,
            ops=ops,
            server=server,
        )

    def start(self) -> None:
        """Start every part's background tasks (after the server listens)."""
        self.writer.start()
        self.broker.start()
        self.moderation.start()
        self.safety.start()
        self.presence.start()
        self.notices.start()

    async def stop(self, *, timeout_s: float, grace_s: float) -> None:
        """Drain: unready, stop accepting, close sockets with 1012 (clients reconnect to another
        node), commit what the writer holds, settle presence, deregister, close."""
        self.ops.ops.draining = True
        self.node.close_all(Close.SERVICE_RESTART, "node draining")
        self.server.close(Close.SERVICE_RESTART, "node draining")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), timeout_s)
        await self.writer.stop(drain_timeout_s=timeout_s)
        await self.presence.close(timeout_s=grace_s + timeout_s)
        await self.safety.close()
        await self.broker.close()
        await self.moderation.close()
        await self.notices.close()
        await self.store.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pool.close(), timeout_s)


async def run(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then shut down in order."""
    setup_logging(settings.log_level)
    gcpolicy.install_pause_timer()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    services = await Services.build(settings)
    node = services.node
    await services.server.start(
        settings.realtime_host,
        settings.realtime_port,
        reuse_port=settings.realtime_reuse_port,
        backlog=settings.realtime_listen_backlog,
    )
    services.start()
    frozen = gcpolicy.tune()  # everything built so far lives as long as the node
    log.info(
        "listening",
        extra={
            "host": settings.realtime_host,
            "port": settings.realtime_port,
            "node": node.node_id,
            "gc_frozen": frozen,
        },
    )
    try:
        await stop.wait()
    finally:
        log.info("stopping", extra={"node": node.node_id})
        try:
            await asyncio.wait_for(
                services.stop(
                    timeout_s=settings.realtime_io_timeout_s * 2,
                    grace_s=settings.presence_grace_s,
                ),
                settings.realtime_drain_s,
            )
        except TimeoutError:
            log.error("drain timed out", extra={"node": node.node_id})
