"""The in-memory twins of the Redis edge: :class:`MemoryBroker`, :class:`MemoryPresence` and
:class:`MemorySafetyFeed`, sharing one :class:`MemoryState` in place of Redis.

They keep the contracts the Redis implementations keep (``tests/realtime/test_seams.py`` runs
the same suite against both): deliveries reach the other nodes of the same state in publish
order, never the publisher's own node, and never inside ``publish``; routes and the presence
marks carry no expiry and count only while their node's lease lives (the registry and leases
expire as their keys do); a node whose lease lapsed writes its routes again at its next
heartbeat, as the Redis broker does. Several nodes may share one state in one process
(the tests do); nothing here is shared between processes. They never fail: a twin has no outage
to translate.

It must not import redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from common import events
from common.tasks import cancel_and_wait
from realtime.broker import Kind, OnDelivery, Scope, Watch
from realtime.presencebackend import ANNOUNCED_ELSEWHERE, STILL_ONLINE, minute_ms


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)


@dataclass
class MemoryState:
    """What Redis holds for the realtime nodes, as plain dicts (times in epoch seconds)."""

    #: user -> node -> when the route was written (no expiry: the node's lease decides).
    routes: dict[int, dict[str, float]] = field(default_factory=dict)
    token_versions: dict[int, int] = field(default_factory=dict)
    brokers: dict[str, MemoryBroker] = field(default_factory=dict)
    shown: set[int] = field(default_factory=set)
    grace: dict[int, float] = field(default_factory=dict)
    seen: dict[int, int] = field(default_factory=dict)
    held: dict[str, set[int]] = field(default_factory=dict)
    #: The node registry: last heartbeat, and when the heartbeat itself (the lease) expires.
    nodes: dict[str, float] = field(default_factory=dict)
    alive: dict[str, float] = field(default_factory=dict)
    safety: list[tuple[str, bytes]] = field(default_factory=list)
    safety_added: asyncio.Event = field(default_factory=asyncio.Event)

    def leased(self, node: str, now: float) -> bool:
        return self.alive.get(node, 0.0) > now

    def other_nodes(self, user: int, me: str, now: float) -> list[str]:
        return [n for n in self.routes.get(user, {}) if n != me and self.leased(n, now)]

    def add_routes(self, node: str, users: Iterable[int]) -> None:
        """Routes of ``users`` to ``node``, and ``users`` in the reaper's index of it."""
        now, held = time.time(), self.held.setdefault(node, set())
        for user in users:
            self.routes.setdefault(user, {})[node] = now
            held.add(user)


_Pending = tuple[Sequence[int], bytes, Watch | None, Kind, Scope]


class MemoryBroker:
    """:class:`realtime.broker.Broker` over a :class:`MemoryState`."""

    def __init__(
        self,
        state: MemoryState,
        *,
        node_id: str,
        route_ttl_s: float,
        local_users: Callable[[], Iterable[int]],
        on_delivery: OnDelivery,
    ) -> None:
        self.state, self.node_id, self.route_ttl_s = state, node_id, route_ttl_s
        self.local_users, self.on_delivery = local_users, on_delivery
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        self.published = self.received = self.regained = 0
        self.leased = False
        state.brokers[node_id] = self

    def start(self) -> None:
        self._beat()  # the lease from the start (the Redis broker's first beat is as prompt)
        self._task = asyncio.create_task(self._heartbeat_loop(), name="memory-heartbeat")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        for user in self.local_users():
            self.state.routes.get(user, {}).pop(self.node_id, None)
        self.state.brokers.pop(self.node_id, None)
        self.state.nodes.pop(self.node_id, None)
        self.state.alive.pop(self.node_id, None)

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
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((users, data, watch, kind, scope))

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        now, state = time.time(), self.state
        for users, data, watch, kind, scope in batch:
            targets: dict[str, list[int]] = {}
            for user in users:
                for node in state.other_nodes(user, self.node_id, now):
                    targets.setdefault(node, []).append(user)
            for node, ids in targets.items():
                if (broker := state.brokers.get(node)) is not None:
                    broker.receive(ids, data, kind, scope)
            if watch is not None:
                gone = [u for u in watch.users if not state.other_nodes(u, self.node_id, now)]
                if gone:
                    watch.unrouted(gone)
            self.published += 1

    def receive(self, users: list[int], data: bytes, kind: Kind, scope: Scope) -> None:
        """An entry for this node: handed over on a later loop turn, in arrival order."""
        self.received += 1
        asyncio.get_running_loop().call_soon(self.on_delivery, users, data, kind, scope)

    async def add_route(self, user_id: int) -> bool:
        self.state.add_routes(self.node_id, [user_id])
        return True

    async def remove_route(self, user_id: int) -> bool:
        self.state.routes.get(user_id, {}).pop(self.node_id, None)
        return True

    async def token_version(self, user_id: int) -> int | None:
        return self.state.token_versions.get(user_id)

    async def cache_token_version(self, user_id: int, version: int) -> None:
        self.state.token_versions[user_id] = version

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.route_ttl_s / 3)
            self._beat()

    def _beat(self) -> None:
        now, state = time.time(), self.state
        held = state.leased(self.node_id, now)
        state.nodes[self.node_id] = now
        state.alive[self.node_id] = now + self.route_ttl_s
        if not held:  # first beat, or lapsed (maybe reaped): register everything again
            state.brokers[self.node_id] = self
            state.add_routes(self.node_id, self.local_users())
            self.regained += 1
        self.leased = True


class MemoryPresence:
    """:class:`realtime.presencebackend.PresenceBackend` over a :class:`MemoryState`."""

    def __init__(self, state: MemoryState, *, node_id: str, ttl_s: float) -> None:
        self.state, self.node_id, self.ttl_s = state, node_id, ttl_s

    def _live(self, user: int, now: float) -> bool:
        return any(self.state.leased(node, now) for node in self.state.routes.get(user, {}))

    async def joined(self, user: int) -> bool:
        state = self.state
        state.held.setdefault(self.node_id, set()).add(user)
        if user in state.shown:
            return False
        state.shown.add(user)
        return True

    async def hold_grace(self, user: int, seconds: float) -> None:
        self.state.grace[user] = time.time() + seconds

    async def states(self, users: Sequence[int], now: float) -> list[tuple[bool, int]]:
        state = self.state
        return [
            (self._live(u, now) or state.grace.get(u, 0.0) > now, state.seen.get(u, 0))
            for u in users
        ]

    async def settle(self, users: Sequence[int], now: float) -> dict[int, int]:
        state, result = self.state, {}
        for user in users:
            if state.routes.get(user):  # any route: a dead node's goes with its reaper
                result[user] = STILL_ONLINE
                continue
            state.grace.pop(user, None)
            if user not in state.shown:
                result[user] = ANNOUNCED_ELSEWHERE
                continue
            state.shown.discard(user)
            result[user] = state.seen[user] = minute_ms(now)
        return result

    async def release(self, users: Collection[int]) -> None:
        self.state.held.get(self.node_id, set()).difference_update(users)

    async def rejoin(self, held: Collection[int], hosted: Collection[int]) -> list[int]:
        state = self.state
        state.held.setdefault(self.node_id, set()).update(held)
        shown = [user for user in hosted if user not in state.shown]
        state.shown.update(shown)
        return shown

    async def claim_dead_nodes(self, now: float) -> list[str]:
        state = self.state
        dead = [
            node
            for node, beat in state.nodes.items()
            if beat < now - self.ttl_s and node != self.node_id
        ]
        claimed = [node for node in dead[:20] if state.alive.get(node, 0.0) <= now]
        for node in claimed:
            del state.nodes[node]
        return claimed

    async def reap(self, node: str) -> list[int]:
        state = self.state
        users = sorted(state.held.pop(node, set()))
        for user in users:
            routes = state.routes.get(user, {})
            routes.pop(node, None)
            if not routes:
                state.routes.pop(user, None)
        state.brokers.pop(node, None)
        state.alive.pop(node, None)
        return users

    async def forget(self) -> None:
        self.state.held.pop(self.node_id, None)


class MemorySafetyFeed:
    """:class:`realtime.safetyfeed.SafetyFeed` over a :class:`MemoryState` (ids like Redis's)."""

    def __init__(self, state: MemoryState, *, block_ms: int = 1000) -> None:
        self.state, self.block_ms = state, block_ms

    async def newest(self) -> str:
        return self.state.safety[-1][0] if self.state.safety else "0-0"

    async def read(self, after: str, *, count: int) -> list[tuple[str, bytes]]:
        loop = asyncio.get_running_loop()
        deadline, mark = loop.time() + self.block_ms / 1000, _stream_id(after)
        while True:
            log = self.state.safety
            start = len(log)
            while start > 0 and _stream_id(log[start - 1][0]) > mark:
                start -= 1
            if start < len(log):
                return log[start : start + count]
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.state.safety_added.wait(), remaining)

    async def publish(self, *items: events.SafetyEvent) -> None:
        state = self.state
        for event in items:
            ms, n = int(time.time() * 1000), 0
            if state.safety:
                last_ms, last_n = _stream_id(state.safety[-1][0])
                ms, n = (ms, 0) if ms > last_ms else (last_ms, last_n + 1)
            state.safety.append((f"{ms}-{n}", events.encode_event(event)))
        # Wake every reader waiting now; later readers wait on a fresh event.
        state.safety_added.set()
        state.safety_added = asyncio.Event()

    async def close(self) -> None:
        return None
