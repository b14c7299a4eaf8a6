"""One contract suite for each seam of the Redis edge, run against both implementations: the
broker, the presence backend and the safety feed, on the real test Redis (``integration``) and
on their in-memory twins (:mod:`realtime.memory`, in ``make test-unit``).

Each test builds its parts through an :class:`Edge`, which hides only which implementation it
is; user ids and node ids are fresh per test, so the Redis runs need no flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from common import events
from common.redisclient import redis_client
from common.rediskeys import NODES, node_users_key, route_key
from realtime.broker import Broker, Kind, RedisBroker, Scope
from realtime.memory import MemoryBroker, MemoryPresence, MemorySafetyFeed, MemoryState
from realtime.presencebackend import (
    ANNOUNCED_ELSEWHERE,
    STILL_ONLINE,
    PresenceBackend,
    RedisPresence,
    minute_ms,
)
from realtime.safetyfeed import RedisSafetyFeed, SafetyFeed
from tests.db_support import TEST_REDIS_URL
from tests.support import TICK

TTL = 40 * TICK
WAIT = 40 * TICK
_users = itertools.count(secrets.randbelow(10**9) + 10**9)

Delivery = tuple[list[int], bytes, Kind, Scope]


@dataclass
class Inbox:
    """Records what a broker hands to its ``on_delivery``."""

    got: list[Delivery] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, users: Sequence[int], data: bytes, kind: Kind, scope: Scope) -> None:
        self.got.append((list(users), data, kind, scope))
        self.arrived.set()

    async def wait_for(self, n: int) -> list[Delivery]:
        """What arrived once ``n`` deliveries have (or after :data:`WAIT`), plus a moment for
        any extra one to show."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while len(self.got) < n and loop.time() < deadline:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 2 * TICK)
        await asyncio.sleep(2 * TICK)
        return self.got


@dataclass
class Recorder:
    """A :class:`realtime.broker.Watch` that records what it is told."""

    users: Sequence[int]
    told: list[list[int]] = field(default_factory=list)

    def unrouted(self, users: Sequence[int]) -> None:
        self.told.append(list(users))


class Edge:
    """Builds the parts of one implementation; closes what it built."""

    kind = ""

    def __init__(self) -> None:
        self.closers: list[Callable[[], Any]] = []

    def broker(self, inbox: Inbox, hosted: Callable[[], Iterable[int]] = tuple) -> Broker:
        raise NotImplementedError

    def presence(self, node_id: str) -> PresenceBackend:
        raise NotImplementedError

    def feed(self) -> SafetyFeed:
        raise NotImplementedError

    async def dead_node(self, node_id: str, users: Sequence[int]) -> None:
        """A node that held ``users`` and stopped beating a while ago."""
        raise NotImplementedError

    async def close(self) -> None:
        for close in reversed(self.closers):
            await close()


class MemoryEdge(Edge):
    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.state = MemoryState()

    def broker(self, inbox: Inbox, hosted: Callable[[], Iterable[int]] = tuple) -> Broker:
        broker = MemoryBroker(
            self.state,
            node_id=f"m-{secrets.token_hex(3)}",
            route_ttl_s=TTL,
            local_users=hosted,
            on_delivery=inbox,
        )
        broker.start()
        self.closers.append(broker.close)
        return broker

    def presence(self, node_id: str) -> PresenceBackend:
        return MemoryPresence(self.state, node_id=node_id, ttl_s=TTL)

    def feed(self) -> SafetyFeed:
        return MemorySafetyFeed(self.state, block_ms=int(4 * TICK * 1000))

    async def dead_node(self, node_id: str, users: Sequence[int]) -> None:
        self.state.nodes[node_id] = time.time() - 10 * TTL
        self.state.held[node_id] = set(users)
        for user in users:
            self.state.routes.setdefault(user, {})[node_id] = time.time() - 10 * TTL


class RedisEdge(Edge):
    kind = "redis"

    def __init__(self) -> None:
        super().__init__()
        self.redis = redis_client(TEST_REDIS_URL)
        self.closers.append(self.redis.aclose)

    def broker(self, inbox: Inbox, hosted: Callable[[], Iterable[int]] = tuple) -> Broker:
        broker = RedisBroker(
            TEST_REDIS_URL,
            node_id=f"r-{secrets.token_hex(3)}",
            address="test",
            route_ttl_s=TTL,
            timeout_s=WAIT,
            local_users=hosted,
            stats=lambda: (0, 0),
            on_delivery=inbox,
            block_ms=int(4 * TICK * 1000),
        )
        broker.start()
        self.closers.append(broker.close)
        return broker

    def presence(self, node_id: str) -> PresenceBackend:
        return RedisPresence(self.redis, node_id=node_id, ttl_s=TTL, timeout_s=WAIT)

    def feed(self) -> SafetyFeed:
        feed = RedisSafetyFeed(
            TEST_REDIS_URL, name="test-feed", timeout_s=WAIT, block_ms=int(4 * TICK * 1000)
        )
        self.closers.append(feed.close)
        return feed

    async def dead_node(self, node_id: str, users: Sequence[int]) -> None:
        await self.redis.zadd(NODES, {node_id: time.time() - 10 * TTL})
        await self.redis.sadd(node_users_key(node_id), *users)
        for user in users:
            await self.redis.zadd(route_key(user), {node_id: time.time() - 10 * TTL})


@pytest.fixture(
    params=["memory", pytest.param("redis", marks=[pytest.mark.integration, pytest.mark.cluster])]
)
async def edge(request: pytest.FixtureRequest) -> AsyncIterator[Edge]:
    built: Edge = MemoryEdge() if request.param == "memory" else RedisEdge()
    yield built
    await built.close()


def new_users(n: int) -> list[int]:
    return [next(_users) for _ in range(n)]


# -- the broker ----------------------------------------------------------------------------


async def test_a_delivery_reaches_the_node_hosting_its_recipient_with_its_kind_and_scope(
    edge: Edge,
) -> None:
    here, there = Inbox(), Inbox()
    a, b = edge.broker(here), edge.broker(there)
    (bob,) = new_users(1)
    assert await b.add_route(bob)
    a.publish([bob], b'{"type":"msg"}', scope=(7, 3))
    a.publish([bob], b'{"type":"presence"}', kind="presence", scope=(0, 3))
    got = await there.wait_for(2)
    assert got == [
        ([bob], b'{"type":"msg"}', "frame", (7, 3)),
        ([bob], b'{"type":"presence"}', "presence", (0, 3)),
    ]
    assert here.got == []  # never to the publisher's own node


async def test_each_node_gets_only_its_recipients_in_publish_order(edge: Edge) -> None:
    a, b, c = Inbox(), Inbox(), Inbox()
    pa, pb, pc = edge.broker(a), edge.broker(b), edge.broker(c)
    users = new_users(6)  # consecutive ids: several hash tags
    on_b, on_c = users[:3], users[3:]
    for user in on_b:
        await pb.add_route(user)
    for user in on_c:
        await pc.add_route(user)
    for i in range(40):
        pa.publish(users, b"%d" % i)
        if i % 7 == 0:
            await asyncio.sleep(0)  # several publisher turns
    got_b, got_c = await b.wait_for(40), await c.wait_for(40)
    assert [data for _, data, _, _ in got_b] == [b"%d" % i for i in range(40)]
    assert [data for _, data, _, _ in got_c] == [b"%d" % i for i in range(40)]
    assert {tuple(u) for u, _, _, _ in got_b} == {tuple(on_b)}
    assert {tuple(u) for u, _, _, _ in got_c} == {tuple(on_c)}
    assert a.got == []


async def test_a_watch_is_told_who_no_other_node_hosts_and_a_removed_route_stops_delivery(
    edge: Edge,
) -> None:
    here, there = Inbox(), Inbox()
    a, b = edge.broker(here), edge.broker(there)
    hosted, away, local_only = new_users(3)
    await b.add_route(hosted)
    await a.add_route(local_only)  # a route on the publisher's node does not count
    watch = Recorder(users=[hosted, away, local_only])
    a.publish([hosted, away, local_only], b"x", watch)
    await there.wait_for(1)
    assert there.got == [([hosted], b"x", "frame", (0, 0))]
    assert [sorted(told) for told in watch.told] == [sorted([away, local_only])]

    assert await b.remove_route(hosted)
    a.publish([hosted], b"gone")
    await b.add_route(away)
    a.publish([away], b"marker")
    got = await there.wait_for(2)
    assert [data for _, data, _, _ in got] == [b"x", b"marker"]


async def test_a_route_lives_as_long_as_its_nodes_lease_without_being_written_again(
    edge: Edge,
) -> None:
    here, there = Inbox(), Inbox()
    a, b = edge.broker(here), edge.broker(there)
    (bob,) = new_users(1)
    assert await b.add_route(bob)
    await asyncio.sleep(1.5 * TTL)  # past the TTL: only b's lease was renewed
    a.publish([bob], b"still here")
    assert await there.wait_for(1) == [([bob], b"still here", "frame", (0, 0))]


async def test_a_reaped_node_writes_its_routes_again_at_its_next_heartbeat(edge: Edge) -> None:
    here, there = Inbox(), Inbox()
    (bob,) = new_users(1)
    a, b = edge.broker(here), edge.broker(there, hosted=lambda: [bob])
    assert await b.add_route(bob)
    await asyncio.sleep(TTL / 2)  # a heartbeat of each
    before = b.regained
    # What a reaper does to a node cut off longer than its TTL: routes, lists and lease gone.
    assert await edge.presence("n-reaper").reap(b.node_id) == [bob]
    watch = Recorder(users=[bob])
    a.publish([bob], b"lost", watch)
    await asyncio.sleep(4 * TICK)
    assert watch.told == [[bob]]  # no route left: nobody hosts bob
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TTL
    while b.regained == before and loop.time() < deadline:
        await asyncio.sleep(TICK)
    assert b.regained == before + 1
    a.publish([bob], b"back")
    got = await there.wait_for(1)
    assert [data for _, data, _, _ in got] == [b"back"]
    assert await edge.presence("n-one").states([bob], time.time()) == [(True, 0)]


async def test_the_token_version_cache(edge: Edge) -> None:
    broker = edge.broker(Inbox())
    (user,) = new_users(1)
    assert await broker.token_version(user) is None
    await broker.cache_token_version(user, 4)
    assert await broker.token_version(user) == 4


# -- presence --------------------------------------------------------------------------------


async def test_online_is_shown_once_and_offline_announced_once_after_the_last_route(
    edge: Edge,
) -> None:
    broker = edge.broker(Inbox())
    one, other = edge.presence("n-one"), edge.presence("n-two")
    (user,) = new_users(1)
    await broker.add_route(user)
    assert await one.joined(user) is True
    assert await other.joined(user) is False  # a second node: already shown
    now = time.time()
    assert await one.states([user], now) == [(True, 0)]
    assert await one.settle([user], now) == {user: STILL_ONLINE}

    await broker.remove_route(user)
    await one.hold_grace(user, TTL)
    assert await one.states([user], time.time()) == [(True, 0)]  # inside the grace
    now = time.time()
    assert await one.settle([user], now) == {user: minute_ms(now)}
    assert await other.settle([user], now) == {user: ANNOUNCED_ELSEWHERE}
    assert await one.states([user], time.time()) == [(False, minute_ms(now))]
    assert await other.joined(user) is True  # back: shown again


async def test_a_dead_node_is_claimed_by_exactly_one_node_and_its_users_released(
    edge: Edge,
) -> None:
    users = new_users(2)
    dead = f"dead-{secrets.token_hex(3)}"
    await edge.dead_node(dead, users)
    one, other = edge.presence("n-one"), edge.presence("n-two")
    claims = [await one.claim_dead_nodes(time.time()), await other.claim_dead_nodes(time.time())]
    assert sorted(c for claim in claims for c in claim if c == dead) == [dead]
    reaper = one if dead in claims[0] else other
    # Its routes count for nobody (no lease), but they hold the offline announcement until
    # the reaper has removed them: it settles that node's users itself.
    assert await one.states(users, time.time()) == [(False, 0), (False, 0)]
    assert await one.settle(users, time.time()) == dict.fromkeys(users, STILL_ONLINE)
    assert await reaper.reap(dead) == sorted(users)
    assert await reaper.states(users, time.time()) == [(False, 0), (False, 0)]
    assert await reaper.settle(users, time.time()) == dict.fromkeys(users, ANNOUNCED_ELSEWHERE)


async def test_a_dead_nodes_route_is_no_route_for_the_broker(edge: Edge) -> None:
    here = Inbox()
    a = edge.broker(here)
    (bob,) = new_users(1)
    await edge.dead_node(f"dead-{secrets.token_hex(3)}", [bob])
    await asyncio.sleep(TTL / 2)  # a heartbeat of a: its view of the leases
    watch = Recorder(users=[bob])
    a.publish([bob], b"x", watch)
    await asyncio.sleep(4 * TICK)
    assert watch.told == [[bob]]


# -- the safety feed -------------------------------------------------------------------------


async def test_a_reader_from_the_newest_id_gets_later_events_in_order_and_waits_for_more(
    edge: Edge,
) -> None:
    feed = edge.feed()
    await feed.publish(events.ModerationChanged())  # before the reader's start: not read
    start = await feed.newest()
    sent = [events.Ban(user=u) for u in new_users(3)]
    await feed.publish(*sent[:2])
    await feed.publish(sent[2])
    got = await feed.read(start, count=10)
    assert [events.decode_event(data) for _, data in got] == sent
    ids = [entry_id for entry_id, _ in got]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == 3
    assert await feed.newest() == ids[-1]
    assert [data for _, data in await feed.read(ids[0], count=1)] == [got[1][1]]

    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await feed.read(ids[-1], count=10) == []  # nothing new: waits, then empty
    assert loop.time() - began >= 3 * TICK
    later = asyncio.create_task(feed.read(ids[-1], count=10))
    await asyncio.sleep(TICK)
    await feed.publish(events.ModerationChanged())
    (entry,) = await later
    assert events.decode_event(entry[1]) == events.ModerationChanged()
