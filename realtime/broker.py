"""Everything a realtime node asks Redis: routes, delivery streams, token versions, heartbeat.

Owns cross-node delivery and this node's lease. Routes say which nodes hold a user's sockets: a
sorted set per user (``mm:{u<n>}:user:<id>:routes``, node id scored by when the entry was
written), with no expiry: written on the user's first socket here (with the user in this node's
``mm:{node:<id>}:users``, the reaper's index), removed on their last. A route is alive as long as
its node's lease (:mod:`realtime.leases`): the heartbeat renews one key per node, whatever its
number of users, reads which nodes hold a lease (O(nodes)) into :attr:`RedisBroker.live`, and the
routes lookup drops members whose node has none. A dead node's routes are removed by the node
that reaps it (:mod:`realtime.presence`). A heartbeat that finds this node's lease gone (cut off
from Redis longer than the TTL, so maybe reaped) writes every local user's route again, once,
and counts it in :attr:`RedisBroker.regained` (presence then restores its own marks); a route
write that failed is retried by the next heartbeat. :meth:`RedisBroker.publish` never
awaits: deliveries queue and one publisher task sends everything queued since its last round trip
together. It costs one pipeline per tick, whatever the number of deliveries: the routes script
reads the routes of the tick's distinct recipients and answers only for users with a route on
another node, one call per users' hash tag (at most ``USER_SLOTS``, one today, each in one slot:
:mod:`common.rediskeys`). When all of them are here (the common case on one node) that is all;
otherwise one more pipeline XADDs, with one script call per other node's stream, one entry per
delivery and node (recipient ids + the frame, encoded once), in publish order. The routes are read
after the commit, as before, so a user whose route was announced before a message committed gets it
live. A delivery may carry a :class:`Watch` (a new chat message some of whose recipients have no
socket on this node): the same routes lookup then also names the watched users that no other node
hosts, and the watch is told, with no extra round trip (``realtime/notices.py`` notifies them).
Each node reads its own stream with XREAD BLOCK from its last id, trims what it has read, and on a
lost connection backs off, reconnects and resumes from the same id.

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
from typing import Final, Literal, Protocol

from common import cluster, wire
from common.redisclient import redis_client
from common.redisedge import REDIS_FAILURES, Arg, Call, LuaScript, eval_scripts, read_stream
from common.rediskeys import (
    NODES,
    by_user_group,
    delivery_stream,
    get_token_versions,
    node_users_key,
    route_key,
    set_token_version,
    stream_entries,
)
from common.tasks import cancel_and_wait
from realtime.coalesce import Coalescer, CoalescerClosed
from realtime.leases import LiveNodes

log = logging.getLogger("realtime.broker")

#: Users per token-version MGET (the sockets authenticating at one moment share one).
VERSION_BATCH: Final = 512
#: MGETs of token versions in flight at once (the rest wait in line, not on new connections).
VERSION_CALLS: Final = 4
#: Approximate cap of a delivery stream (a dead node's stream stops growing here).
STREAM_MAXLEN: Final = 100_000
MAX_PENDING: Final = 200_000
#: Users per pipeline when every local route is written again (a lease regained).
REGISTER_BATCH: Final = 1000
# KEYS: the route sets of a tick's distinct recipients that share one hash tag, the watched
# ones first.
# ARGV: own node id, how many keys are watched.
# Answers a flat list (key index, 'node,written,node,written...' of the other nodes) for the
# keys with another node, and (key index, '') for the watched keys with none. Whether those
# nodes are alive is the caller's to decide (their leases live in another slot).
ROUTES_LUA: Final = """
local me, watched, out = ARGV[1], tonumber(ARGV[2]), {}
for i, key in ipairs(KEYS) do
  local others, entries = {}, redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  for j = 1, #entries, 2 do
    if entries[j] ~= me then
      others[#others + 1] = entries[j]; others[#others + 1] = entries[j + 1]
    end
  end
  if #others > 0 then out[#out + 1] = i; out[#out + 1] = table.concat(others, ',')
  elseif i <= watched then out[#out + 1] = i; out[#out + 1] = '' end
end
return out
"""

# KEYS: one node's delivery stream.
# ARGV: maxlen, then (recipient ids, kind, scope, frame) per entry (see :func:`entry_header`).
XADD_LUA: Final = """
local maxlen = ARGV[1]
for i = 2, #ARGV, 4 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',
             'u', ARGV[i], 'k', ARGV[i + 1], 's', ARGV[i + 2], 'f', ARGV[i + 3])
end
return (#ARGV - 1) / 4
"""
ROUTES: Final = LuaScript(ROUTES_LUA)
XADD: Final = LuaScript(XADD_LUA)


class BrokerUnavailable(Exception):
    """Redis could not answer."""


#: What a delivery is, carried beside its bytes (never sniffed from them): a frame for the
#: hub, or a presence frame that presence shows per recipient socket.
Kind = Literal["frame", "presence"]
#: ``(cid, author)`` of a delivery, for the fan-out filters (0 for what it lacks).
Scope = tuple[int, int]
#: Receives each entry of this node's delivery stream: recipients, bytes, kind, scope.
OnDelivery = Callable[[Sequence[int], bytes, Kind, Scope], None]
_KINDS: Final[dict[Kind, bytes]] = {"frame": b"f", "presence": b"p"}
_Pending = tuple[Sequence[int], bytes, "Watch | None", Kind, Scope]


def route_members(raw: bytes) -> list[tuple[str, float]]:
    """``(node, written)`` pairs from a routes answer's ``node,written,...`` (empty: none)."""
    if not raw:
        return []
    parts = raw.decode().split(",")
    return [(parts[i], float(parts[i + 1])) for i in range(0, len(parts) - 1, 2)]


def entry_header(kind: Kind, scope: Scope) -> tuple[bytes, bytes]:
    """The ``k`` and ``s`` fields of a delivery-stream entry."""
    return _KINDS[kind], b"%d:%d" % scope


def read_header(fields: dict[bytes, bytes]) -> tuple[Kind, Scope]:
    """An entry's kind and scope (the frame's own scope if the entry has none)."""
    kind: Kind = "presence" if fields.get(b"k") == b"p" else "frame"
    raw = fields.get(b"s")
    if raw is None:
        return kind, wire.scope_of(fields[b"f"])
    cid, _, author = raw.partition(b":")
    return kind, (int(cid), int(author or 0))


class Watch(Protocol):
    """Asks, with one delivery, which of its :attr:`users` no other node hosts."""

    @property
    def users(self) -> Sequence[int]: ...

    def unrouted(self, users: Sequence[int]) -> None:
        """Called after the routes lookup with the watched users no other node hosts (not
        called when there are none, or when Redis could not answer)."""


class Broker(Protocol):
    """Cross-node delivery, routes and the token-version cache: :class:`RedisBroker`, or the
    in-memory twin :class:`realtime.memory.MemoryBroker`; one contract suite
    (``tests/realtime/test_seams.py``) runs against both. An implementation takes its
    ``on_delivery`` (entries other nodes published to this one) when it is built."""

    node_id: str
    #: How many times a heartbeat found this node's lease gone (the first one included) and
    #: wrote every local route again.
    regained: int

    @property
    def leased(self) -> bool:
        """The last heartbeat renewed the lease (and wrote the routes again if it had gone)."""

    def start(self) -> None: ...

    async def close(self) -> None: ...

    def publish(
        self,
        users: Sequence[int],
        data: bytes,
        watch: Watch | None = None,
        *,
        kind: Kind = "frame",
        scope: Scope = (0, 0),
    ) -> None:
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
        on_delivery: OnDelivery,
        block_ms: int = 1000,
        load: Callable[[], dict[str, float]] = dict,
    ) -> None:
        self.node_id, self.address = node_id, address
        self.route_ttl_s, self.timeout_s, self.block_ms = route_ttl_s, timeout_s, block_ms
        self.local_users, self.stats, self.load = local_users, stats, load
        self.stream = delivery_stream(node_id)
        self.live = LiveNodes(node_id, stale_after_s=route_ttl_s / 2)
        self.regained = 0
        self._leased = False  # the last heartbeat found (or wrote) this node's lease
        # Users whose route write failed: the next heartbeat writes or removes their route.
        self._unsynced: set[int] = set()
        self.redis = redis_client(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            client_name=f"rt:{node_id}",
        )
        # XREAD BLOCK holds its connection: a client of its own, with a longer socket timeout.
        self._reader = redis_client(
            url,
            socket_timeout=block_ms / 1000 + timeout_s,
            socket_connect_timeout=timeout_s,
            client_name=f"rt:{node_id}:reader",
        )
        #: The token-version reads of sockets authenticating at once, one MGET per batch.
        self.version_reads: Coalescer[int, int | None] = Coalescer(
            self._read_versions, max_batch=VERSION_BATCH, max_in_flight=VERSION_CALLS
        )
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Set by close(): every loop also stops at its next turn. A cancel alone is not enough
        # on Python 3.11, whose asyncio.wait_for can swallow a cancellation that arrives as the
        # awaited call completes; the loop then went on (seen as a hung close on the cluster).
        self._stopping = False
        self.on_delivery = on_delivery
        self.started_at = time.time()
        self.published = self.dropped = self.received = 0
        self.last_id = f"{int(self.started_at * 1000)}-0"
        # For /readyz and /metrics: when XREAD last answered, and the age of the last entry read.
        self.read_ok_at, self.lag_s = time.monotonic(), 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="broker-reader"),
            asyncio.create_task(self._publish_loop(), name="broker-publisher"),
            asyncio.create_task(self._heartbeat_loop(), name="broker-heartbeat"),
        ]

    async def close(self) -> None:
        """Stop the loops, withdraw this node's routes and heartbeat, close the clients."""
        await self.version_reads.close()
        self._stopping = True
        self._wake.set()
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        with contextlib.suppress(*REDIS_FAILURES):
            await asyncio.wait_for(self._remove_routes(self.local_users()), self.timeout_s)
            await asyncio.wait_for(self.redis.delete(self.stream), self.timeout_s)
            await asyncio.wait_for(cluster.remove_node(self.redis, self.node_id), self.timeout_s)
        await self.redis.aclose()
        await self._reader.aclose()

    @property
    def leased(self) -> bool:
        return self._leased

    @property
    def reading(self) -> bool:
        """The delivery-stream reader task is running."""
        return bool(self._tasks) and not self._tasks[0].done()

    # -- routes and token versions -------------------------------------------------------------

    async def add_route(self, user_id: int) -> bool:
        """Announce that this node hosts ``user_id``; False (logged, and retried by the next
        heartbeat) when Redis is down."""
        try:
            await asyncio.wait_for(self._write_routes([user_id]), self.timeout_s)
            self._unsynced.discard(user_id)
            return True
        except REDIS_FAILURES as exc:
            self._unsynced.add(user_id)
            log.warning("route add failed", extra={"error": type(exc).__name__})
            return False

    async def remove_route(self, user_id: int) -> bool:
        try:
            await asyncio.wait_for(self._remove_routes([user_id]), self.timeout_s)
            self._unsynced.discard(user_id)
            return True
        except REDIS_FAILURES as exc:
            self._unsynced.add(user_id)
            log.warning("route remove failed", extra={"error": type(exc).__name__})
            return False

    async def _write_routes(self, users: Sequence[int]) -> None:
        """Routes of ``users`` to this node, and ``users`` in the reaper's index of this node
        (in one pipeline: a route the reaper could not find would outlive this node)."""
        if not users:
            return
        written = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            if not self._leased:
                # No lease yet (or lost): registered all the same, so that if this node never
                # gets one, a reaper still finds it (its score alone ages; NX keeps a newer one).
                pipe.zadd(NODES, {self.node_id: written}, nx=True)
            pipe.sadd(node_users_key(self.node_id), *users)
            for user in users:
                pipe.zadd(route_key(user), {self.node_id: written})
            await pipe.execute()

    async def _remove_routes(self, users: Iterable[int]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.zrem(route_key(user), self.node_id)
            await pipe.execute()

    async def token_version(self, user_id: int) -> int | None:
        """The cached version (None when Redis holds none), read by an MGET shared with the
        other sockets authenticating at this moment and started after this call."""
        try:
            return await self.version_reads.get(user_id)
        except CoalescerClosed as exc:
            raise BrokerUnavailable("closed") from exc

    async def _read_versions(self, users: list[int]) -> dict[int, int | None]:
        try:
            return await asyncio.wait_for(get_token_versions(self.redis, users), self.timeout_s)
        except REDIS_FAILURES as exc:
            raise BrokerUnavailable(type(exc).__name__) from exc

    async def cache_token_version(self, user_id: int, version: int) -> None:
        """Fill the cache after reading PostgreSQL; a failure only costs a later re-read."""
        with contextlib.suppress(*REDIS_FAILURES):
            await asyncio.wait_for(set_token_version(self.redis, user_id, version), self.timeout_s)

    # -- delivery ----------------------------------------------------------------------------

    def publish(
        self,
        users: Sequence[int],
        data: bytes,
        watch: Watch | None = None,
        *,
        kind: Kind = "frame",
        scope: Scope = (0, 0),
    ) -> None:
        if not users:
            return
        if len(self._pending) >= MAX_PENDING:
            # Redis is far behind: drop (committed messages still reach recipients via sync).
            self.dropped += 1
            return
        self._pending.append((users, data, watch, kind, scope))
        self._wake.set()

    async def _publish_loop(self) -> None:
        backoff = 0.05
        while not self._stopping:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            batch, self._pending = self._pending, []
            try:
                await asyncio.wait_for(self._publish(batch), self.timeout_s)
                self.published += len(batch)
                backoff = 0.05
            except REDIS_FAILURES as exc:
                self.dropped += len(batch)
                log.warning("publish failed", extra={"error": type(exc).__name__, "n": len(batch)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _publish(self, batch: list[_Pending]) -> None:
        # Phase 1: the routes of every distinct recipient of the batch, one script call per
        # hash tag in one pipeline (the watched ones first in each: the script says which of
        # those no other node hosts).
        watched = dict.fromkeys(u for _, _, w, _, _ in batch if w is not None for u in w.users)
        users = dict.fromkeys(u for recipients, *_ in batch for u in recipients)
        if watched:
            users = dict.fromkeys([*watched, *users])
        groups = by_user_group(users)
        node_id, live, now = self.node_id, self.live, time.time()
        calls: list[Call] = [
            (
                ROUTES,
                [route_key(u) for u in members],
                (node_id, sum(u in watched for u in members) if watched else 0),
            )
            for members in groups
        ]
        replies = await eval_scripts(self.redis, calls)
        elsewhere: dict[int, list[bytes]] = {}
        nowhere: set[int] = set()
        for members, reply in zip(groups, replies, strict=True):
            for i in range(0, len(reply), 2):
                user = members[int(reply[i]) - 1]
                nodes = [
                    node.encode()
                    for node, written in route_members(reply[i + 1])
                    if live.alive(node, written, now)
                ]
                if nodes:
                    elsewhere[user] = nodes
                elif user in watched:
                    nowhere.add(user)
        if nowhere:
            self._tell_watches(batch, nowhere)
        if not elsewhere:
            return
        # Phase 2: per delivery, one entry for each other node hosting any of its recipients;
        # one script call per node's stream (its own slot), entries in publish order.
        streams: dict[bytes, list[Arg]] = {}
        for recipients, data, _, kind, scope in batch:
            targets: dict[bytes, list[str]] = {}
            for user in recipients:
                for node in elsewhere.get(user, ()):
                    targets.setdefault(node, []).append(str(user))
            for node, ids in targets.items():
                args = streams.get(node)
                if args is None:
                    args = streams[node] = [STREAM_MAXLEN]
                args += (",".join(ids).encode(), *entry_header(kind, scope), data)
        await eval_scripts(
            self.redis,
            [(XADD, [delivery_stream(node.decode())], args) for node, args in streams.items()],
        )

    @staticmethod
    def _tell_watches(batch: list[_Pending], nowhere: set[int]) -> None:
        for _, _, watch, _, _ in batch:
            if watch is not None and (gone := [u for u in watch.users if u in nowhere]):
                try:
                    watch.unrouted(gone)
                except Exception:
                    log.exception("watch failed")

    async def _read_loop(self) -> None:
        backoff, last_trim = 0.05, 0.0
        while not self._stopping:
            try:
                reply = await read_stream(
                    self._reader, self.stream, self.last_id, count=1000, block_ms=self.block_ms
                )
                backoff = 0.05
                self.read_ok_at, self.lag_s = time.monotonic(), 0.0
            except REDIS_FAILURES as exc:
                log.warning("stream read failed", extra={"error": type(exc).__name__})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            for entry_id, fields in stream_entries(reply):
                self.last_id = entry_id
                self.received += 1
                try:
                    users = [int(u) for u in fields[b"u"].split(b",")]
                    self.on_delivery(users, fields[b"f"], *read_header(fields))
                except Exception:
                    log.exception("bad delivery entry")
            if self.last_id and reply:
                self.lag_s = max(0.0, time.time() - int(self.last_id.split("-")[0]) / 1000)
            now = time.monotonic()
            if now - last_trim >= 1.0:
                last_trim = now
                # Entries before the last one read are done with: a single reader per stream.
                with contextlib.suppress(*REDIS_FAILURES):
                    await self.redis.xtrim(self.stream, minid=self.last_id, approximate=False)

    async def _heartbeat_loop(self) -> None:
        interval = self.route_ttl_s / 3
        while not self._stopping:
            try:
                await self._heartbeat()
            except REDIS_FAILURES as exc:
                log.warning("heartbeat failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(interval)

    async def _heartbeat(self) -> None:
        """Renew the lease (O(1) writes); write every local route again if it had lapsed, else
        only the routes whose write failed; read which nodes hold a lease (O(nodes))."""
        info = self._node_info()
        self._leased = False  # until this renewal answers (and the routes are back)
        held = await asyncio.wait_for(
            cluster.renew_lease(self.redis, info, ttl_s=self.route_ttl_s), self.timeout_s
        )
        if not held:
            users = list(self.local_users())
            if self.regained or users:
                log.warning("lease lost: routes written again", extra={"users": len(users)})
            for start in range(0, len(users), REGISTER_BATCH):
                chunk = users[start : start + REGISTER_BATCH]
                await asyncio.wait_for(self._write_routes(chunk), self.timeout_s)
            self._unsynced.clear()
            self.regained += 1
        self._leased = True
        if self._unsynced:
            await self._sync_routes()
        await asyncio.wait_for(self.live.refresh(self.redis), self.timeout_s)

    async def _sync_routes(self) -> None:
        """Write or remove the routes whose last write failed, as the hub has them now."""
        users, self._unsynced = self._unsynced, set()
        try:
            hosted = set(self.local_users())
            here = [u for u in users if u in hosted]
            await asyncio.wait_for(self._write_routes(here), self.timeout_s)
            await asyncio.wait_for(
                self._remove_routes([u for u in users if u not in hosted]), self.timeout_s
            )
        except BaseException:
            self._unsynced |= users
            raise

    def _node_info(self) -> cluster.NodeInfo:
        connections, users = self.stats()
        return cluster.NodeInfo(
            id=self.node_id,
            address=self.address,
            started_at=self.started_at,
            heartbeat_at=time.time(),
            connections=connections,
            users=users,
            **self.load(),
        )
