"""Everything a realtime node asks Redis: routes, delivery streams, token versions, heartbeat.

Owns cross-node delivery. Routes say which nodes hold a user's sockets: a sorted set per user
(``mm:user:<id>:routes``, node id scored by the time the entry expires), refreshed by this
node's heartbeat, so a dead node's routes expire by themselves. :meth:`RedisBroker.publish`
never awaits: deliveries queue and one publisher task sends everything queued since its last
round trip together. It costs one script call per tick, whatever the number of deliveries: the
routes script reads the routes of every distinct recipient of the tick at once and answers only
for users with a route on another node. When all of them are here (the common case on one node)
that is all; otherwise one more script call XADDs one entry per delivery and other node
(recipient ids + the frame, encoded once). The routes are read after the commit, as before, so a
user whose route was announced before a message committed gets it live. A delivery may carry a
:class:`Watch` (a new chat message some of whose recipients have no socket on this node): the
same script call then also names the watched users that no other node hosts, and the watch is
told, with no extra round trip (``realtime/notices.py`` notifies them). Each node reads its own
stream with XREAD BLOCK from its last id, trims what it has read, and on a lost connection backs
off, reconnects and resumes from the same id.

Exceptions: nothing above this module catches a redis exception type; Redis failures become
:class:`BrokerUnavailable` (for calls whose caller decides) or are logged and retried (the
background loops). It must not touch PostgreSQL or sockets (it hands entries to ``on_delivery``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from common import cluster
from common.rediskeys import (
    delivery_stream,
    get_token_versions,
    set_token_version,
    stream_entries,
)
from realtime.coalesce import Coalescer, CoalescerClosed

log = logging.getLogger("realtime.broker")

#: Users per token-version MGET (the sockets authenticating at one moment share one).
VERSION_BATCH: Final = 512
#: MGETs of token versions in flight at once (the rest wait in line, not on new connections).
VERSION_CALLS: Final = 4
#: Approximate cap of a delivery stream (a dead node's stream stops growing here).
STREAM_MAXLEN: Final = 100_000
MAX_PENDING: Final = 200_000
_FAILURES: Final = (RedisError, OSError, TimeoutError, asyncio.TimeoutError)

# KEYS: the route sets of every distinct recipient of a tick, the watched ones first.
# ARGV: now, own node id, how many keys are watched.
# Answers a flat list (key index, comma-joined other nodes) for the keys with another node, and
# (key index, '') for the watched keys with none.
ROUTES_LUA: Final = """
local now, me, watched, out = ARGV[1], ARGV[2], tonumber(ARGV[3]), {}
for i, key in ipairs(KEYS) do
  local others = {}
  for _, node in ipairs(redis.call('ZRANGE', key, now, '+inf', 'BYSCORE')) do
    if node ~= me then others[#others + 1] = node end
  end
  if #others > 0 then out[#out + 1] = i; out[#out + 1] = table.concat(others, ',')
  elseif i <= watched then out[#out + 1] = i; out[#out + 1] = '' end
end
return out
"""

# KEYS: delivery streams. ARGV: maxlen, then (stream index, recipient ids, frame) per entry.
XADD_LUA: Final = """
local maxlen = ARGV[1]
for i = 2, #ARGV, 3 do
  redis.call('XADD', KEYS[tonumber(ARGV[i])], 'MAXLEN', '~', maxlen, '*',
             'u', ARGV[i + 1], 'f', ARGV[i + 2])
end
return (#ARGV - 1) / 3
"""


def route_key(user_id: int) -> str:
    """Sorted set of node ids hosting ``user_id``'s sockets, scored by expiry (epoch s)."""
    return f"mm:user:{user_id}:routes"


class BrokerUnavailable(Exception):
    """Redis could not answer."""


OnDelivery = Callable[[Sequence[int], bytes], None]


class Watch(Protocol):
    """Asks, with one delivery, which of its :attr:`users` no other node hosts."""

    @property
    def users(self) -> Sequence[int]: ...

    def unrouted(self, users: Sequence[int]) -> None:
        """Called after the routes lookup with the watched users no other node hosts (not
        called when there are none, or when Redis could not answer)."""


class Broker(Protocol):
    """The node's view of Redis; a test or another transport can stand behind it."""

    def start(self, on_delivery: OnDelivery) -> None: ...

    async def close(self) -> None: ...

    def publish(self, users: Sequence[int], data: bytes, watch: Watch | None = None) -> None:
        """Deliver ``data`` to ``users``' sockets on other nodes; never awaits."""

    async def add_route(self, user_id: int) -> bool: ...

    async def remove_route(self, user_id: int) -> bool: ...

    async def token_version(self, user_id: int) -> int | None:
        """Raise :class:`BrokerUnavailable` when Redis cannot say."""

    async def cache_token_version(self, user_id: int, version: int) -> None: ...


class RedisBroker:
    def __init__(
        self,
        url: str,
        *,
        node_id: str,
        address: str,
        route_ttl_s: float,
        timeout_s: float,
        local_users: Callable[[], Iterable[int]],
        stats: Callable[[], tuple[int, int]],
        block_ms: int = 1000,
        load: Callable[[], dict[str, float]] = dict,
    ) -> None:
        self.node_id, self.address = node_id, address
        self.route_ttl_s, self.timeout_s, self.block_ms = route_ttl_s, timeout_s, block_ms
        self.local_users, self.stats, self.load = local_users, stats, load
        self.stream = delivery_stream(node_id)
        self._pre, self._post = delivery_stream("\0").split("\0")
        self.redis = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            client_name=f"rt:{node_id}",
        )
        # XREAD BLOCK holds its connection: a client of its own, with a longer socket timeout.
        self._reader = Redis.from_url(
            url,
            socket_timeout=block_ms / 1000 + timeout_s,
            socket_connect_timeout=timeout_s,
            client_name=f"rt:{node_id}:reader",
        )
        self._versions: Coalescer[int, int | None] = Coalescer(
            self._read_versions, max_batch=VERSION_BATCH, max_in_flight=VERSION_CALLS
        )
        self._routes = self.redis.register_script(ROUTES_LUA)
        self._xadd = self.redis.register_script(XADD_LUA)
        self._pending: list[tuple[Sequence[int], bytes, Watch | None]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._on_delivery: OnDelivery = lambda users, data: None
        self.started_at = time.time()
        self.published = self.dropped = self.received = 0
        self.last_id = f"{int(self.started_at * 1000)}-0"
        # For /readyz and /metrics: when XREAD last answered, and the age of the last entry read.
        self.read_ok_at, self.lag_s = time.monotonic(), 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, on_delivery: OnDelivery) -> None:
        self._on_delivery = on_delivery
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="broker-reader"),
            asyncio.create_task(self._publish_loop(), name="broker-publisher"),
            asyncio.create_task(self._heartbeat_loop(), name="broker-heartbeat"),
        ]

    async def close(self) -> None:
        """Stop the loops, withdraw this node's routes and heartbeat, close the clients."""
        await self._versions.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(*_FAILURES):
            async with self.redis.pipeline(transaction=False) as pipe:
                for user in self.local_users():
                    pipe.zrem(route_key(user), self.node_id)
                pipe.delete(self.stream)
                await asyncio.wait_for(pipe.execute(), self.timeout_s)
            await asyncio.wait_for(cluster.remove_node(self.redis, self.node_id), self.timeout_s)
        await self.redis.aclose()
        await self._reader.aclose()

    @property
    def reading(self) -> bool:
        """The delivery-stream reader task is running."""
        return bool(self._tasks) and not self._tasks[0].done()

    # -- routes and token versions -------------------------------------------------------------

    async def add_route(self, user_id: int) -> bool:
        """Announce that this node hosts ``user_id``; False (logged) when Redis is down."""
        try:
            await asyncio.wait_for(self._route_pipeline([user_id]), self.timeout_s)
            return True
        except _FAILURES as exc:
            log.warning("route add failed", extra={"error": type(exc).__name__})
            return False

    async def remove_route(self, user_id: int) -> bool:
        try:
            await asyncio.wait_for(
                self.redis.zrem(route_key(user_id), self.node_id), self.timeout_s
            )
            return True
        except _FAILURES as exc:
            log.warning("route remove failed", extra={"error": type(exc).__name__})
            return False

    async def _route_pipeline(self, users: Iterable[int]) -> None:
        expiry = time.time() + self.route_ttl_s
        ttl_ms = int(self.route_ttl_s * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for user in users:
                key = route_key(user)
                pipe.zadd(key, {self.node_id: expiry})
                pipe.pexpire(key, ttl_ms)
            await pipe.execute()

    async def token_version(self, user_id: int) -> int | None:
        """The cached version (None when Redis holds none), read by an MGET shared with the
        other sockets authenticating at this moment and started after this call."""
        try:
            return await self._versions.get(user_id)
        except CoalescerClosed as exc:
            raise BrokerUnavailable("closed") from exc

    async def _read_versions(self, users: list[int]) -> dict[int, int | None]:
        try:
            return await asyncio.wait_for(get_token_versions(self.redis, users), self.timeout_s)
        except _FAILURES as exc:
            raise BrokerUnavailable(type(exc).__name__) from exc

    async def cache_token_version(self, user_id: int, version: int) -> None:
        """Fill the cache after reading PostgreSQL; a failure only costs a later re-read."""
        with contextlib.suppress(*_FAILURES):
            await asyncio.wait_for(set_token_version(self.redis, user_id, version), self.timeout_s)

    # -- delivery ----------------------------------------------------------------------------

    def publish(self, users: Sequence[int], data: bytes, watch: Watch | None = None) -> None:
        if not users:
            return
        if len(self._pending) >= MAX_PENDING:
            # Redis is far behind: drop (committed messages still reach recipients via sync).
            self.dropped += 1
            return
        self._pending.append((users, data, watch))
        self._wake.set()

    async def _publish_loop(self) -> None:
        backoff = 0.05
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            batch, self._pending = self._pending, []
            try:
                await asyncio.wait_for(self._publish(batch), self.timeout_s)
                self.published += len(batch)
                backoff = 0.05
            except _FAILURES as exc:
                self.dropped += len(batch)
                log.warning("publish failed", extra={"error": type(exc).__name__, "n": len(batch)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _publish(self, batch: list[tuple[Sequence[int], bytes, Watch | None]]) -> None:
        # Phase 1: the routes of every distinct recipient of the batch, in one script call
        # (the watched ones first: the script says which of those no other node hosts).
        watched = dict.fromkeys(u for _, _, w in batch if w is not None for u in w.users)
        users = list(dict.fromkeys(u for recipients, _, _ in batch for u in recipients))
        if watched:
            users = list(dict.fromkeys([*watched, *users]))
        reply = await self._routes(
            keys=[route_key(u) for u in users],
            args=[str(time.time()), self.node_id, len(watched)],
        )
        if not reply:
            return  # every recipient is here (or nowhere): the hub has served them already
        elsewhere: dict[int, list[bytes]] = {}
        nowhere: set[int] = set()
        for i in range(0, len(reply), 2):
            user = users[int(reply[i]) - 1]
            if reply[i + 1]:
                elsewhere[user] = reply[i + 1].split(b",")
            else:
                nowhere.add(user)
        if nowhere:
            self._tell_watches(batch, nowhere)
        if not elsewhere:
            return
        # Phase 2: per delivery, one entry for each other node hosting any of its recipients.
        streams: dict[bytes, int] = {}
        args: list[bytes | int] = [STREAM_MAXLEN]
        for recipients, data, _ in batch:
            targets: dict[bytes, list[str]] = {}
            for user in recipients:
                for node in elsewhere.get(user, ()):
                    targets.setdefault(node, []).append(str(user))
            for node, ids in targets.items():
                index = streams.setdefault(node, len(streams) + 1)
                args += (index, ",".join(ids).encode(), data)
        keys = [f"{self._pre}{node.decode()}{self._post}" for node in streams]
        await self._xadd(keys=keys, args=args)

    @staticmethod
    def _tell_watches(
        batch: list[tuple[Sequence[int], bytes, Watch | None]], nowhere: set[int]
    ) -> None:
        for _, _, watch in batch:
            if watch is not None and (gone := [u for u in watch.users if u in nowhere]):
                try:
                    watch.unrouted(gone)
                except Exception:
                    log.exception("watch failed")

    async def _read_loop(self) -> None:
        backoff, last_trim = 0.05, 0.0
        while True:
            try:
                reply = await self._reader.xread(
                    {self.stream: self.last_id}, count=1000, block=self.block_ms
                )
                backoff = 0.05
                self.read_ok_at, self.lag_s = time.monotonic(), 0.0
            except _FAILURES as exc:
                log.warning("stream read failed", extra={"error": type(exc).__name__})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            for entry_id, fields in stream_entries(reply):
                self.last_id = entry_id
                self.received += 1
                try:
                    users = [int(u) for u in fields[b"u"].split(b",")]
                    self._on_delivery(users, fields[b"f"])
                except Exception:
                    log.exception("bad delivery entry")
            if self.last_id and reply:
                self.lag_s = max(0.0, time.time() - int(self.last_id.split("-")[0]) / 1000)
            now = time.monotonic()
            if now - last_trim >= 1.0:
                last_trim = now
                # Entries before the last one read are done with: a single reader per stream.
                with contextlib.suppress(*_FAILURES):
                    await self.redis.xtrim(self.stream, minid=self.last_id, approximate=False)

    async def _heartbeat_loop(self) -> None:
        interval = self.route_ttl_s / 3
        while True:
            try:
                await asyncio.wait_for(
                    self._route_pipeline(list(self.local_users())), self.timeout_s
                )
                connections, users = self.stats()
                now = time.time()
                info = cluster.NodeInfo(
                    id=self.node_id,
                    address=self.address,
                    started_at=self.started_at,
                    heartbeat_at=now,
                    connections=connections,
                    users=users,
                    **self.load(),
                )
                await asyncio.wait_for(
                    cluster.publish_heartbeat(self.redis, info, ttl_s=self.route_ttl_s),
                    self.timeout_s,
                )
            except _FAILURES as exc:
                log.warning("heartbeat failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(interval)
