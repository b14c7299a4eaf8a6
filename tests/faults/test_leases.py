"""Node leases (issue 18 item 3): a node's users live as long as its lease, and no longer.

- ``kill -9`` of a node: a peer on another node gets the offline push within one lease TTL and
  one reaper step (the lease key lapses, a survivor claims the node, removes its routes and
  announces its users).
- A node cut off from Redis longer than its TTL (a raw :class:`FaultProxy` between it and
  Redis) is reaped by the other node like a dead one, although it still holds its sockets; when
  it reaches Redis again its heartbeat finds the lease gone and registers its users again: the
  peer is told "online" again, sees it in a query, and messages reach the user live.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from common.rediskeys import node_key
from tests.faults.conftest import NODE_ENV, Cluster, World
from tests.faults.proxy import FaultProxy
from tests.faults.results import record
from tests.faults.services import PrivateServices
from tests.faults.wsclient import Recorder
from tests.support import TICK

TTL = float(NODE_ENV["MM_PRESENCE_TTL_S"])
#: How often a node looks for dead nodes to reap (``Presence._loop``).
REAP_STEP = TTL / 3


def pushed_at(rec: Recorder, user: int, state: str, after: float = 0.0) -> float | None:
    """When ``rec`` first got a presence push saying ``user`` is ``state`` (after ``after``)."""
    for at, frame in rec.frames:
        if at < after or frame["type"] != "presence" or "rid" in frame:
            continue
        if any(e["user"] == user and e["state"] == state for e in frame["users"]):
            return at
    return None


async def wait_push(rec: Recorder, user: int, state: str, after: float, timeout: float) -> float:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (at := pushed_at(rec, user, state, after)) is None:
        assert loop.time() < deadline, f"no {state!r} push for {user} in {timeout:.1f}s"
        await asyncio.sleep(TICK / 5)
    return at


async def query(rec: Recorder, user: int, rid: str) -> str:
    await rec.send(type="presence", users=[user], rid=rid)
    answer = await rec.wait_for("presence", rid=rid)
    return str(answer[0]["users"][0]["state"])


async def wait_leased(url: str, node_id: str) -> None:
    redis = Redis.from_url(url)
    try:
        async with asyncio.timeout(TTL):
            while not await redis.exists(node_key(node_id)):
                await asyncio.sleep(TICK)
    finally:
        await redis.aclose()


@pytest.fixture
async def redis_proxy(private: PrivateServices) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(int(urlsplit(private.redis_url).port or 0), websocket=False)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_kill_9_of_a_node_shows_its_user_offline_within_one_lease_ttl(
    cluster: Cluster, world: World
) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    alice, bob = await world.user(), await world.user()
    await world.conversation(alice, bob)
    watcher = await Recorder.open(cluster.url(b), world.make_token(alice))
    target = await Recorder.open(cluster.url(a), world.make_token(bob))
    try:
        await wait_push(watcher, bob, "online", 0.0, 40 * TICK)
        await asyncio.sleep(TTL / 2)  # a heartbeat or two after the join
        assert a.proc is not None
        a.signal(signal.SIGKILL)
        a.proc.wait(20 * TICK)
        killed_at = time.monotonic()
        offline_at = await wait_push(watcher, bob, "offline", killed_at, TTL + 2 * REAP_STEP)
        assert await query(watcher, bob, "after-kill") == "offline"
    finally:
        await watcher.close()
        await target.close()
    delay = offline_at - killed_at
    record("leases[kill -9 offline delay]", delay_s=round(delay, 2), ttl_s=TTL, step_s=REAP_STEP)
    assert delay <= TTL + REAP_STEP + 10 * TICK, f"offline after {delay:.2f}s (ttl {TTL}s)"


async def test_a_node_cut_off_past_its_ttl_is_reaped_then_registers_its_users_again(
    cluster: Cluster, world: World, private: PrivateServices, redis_proxy: FaultProxy
) -> None:
    path = urlsplit(private.redis_url).path
    a = cluster.node("a", MM_REDIS_URL=f"redis://127.0.0.1:{redis_proxy.port}{path}")
    b = cluster.node("b")
    alice, bob = await world.user(), await world.user()
    cid = await world.conversation(alice, bob)
    watcher = await Recorder.open(cluster.url(b), world.make_token(alice))
    target = await Recorder.open(cluster.url(a), world.make_token(bob))
    try:
        await wait_push(watcher, bob, "online", 0.0, 40 * TICK)
        assert await query(watcher, bob, "before") == "online"
        # The proxy runs in this loop, which waited for the nodes to start: a's first
        # heartbeats may have timed out. Cut it off once it holds its lease.
        assert a.proc is not None
        await wait_leased(private.redis_url, f"a-{a.port}")
        redis_proxy.cut_off()
        cut_at = time.monotonic()
        # b reaps a like a dead node: bob's route is removed and bob announced offline.
        offline_at = await wait_push(watcher, bob, "offline", cut_at, TTL + 2 * REAP_STEP)
        assert await query(watcher, bob, "cut") == "offline"
        redis_proxy.restore()
        back_at = time.monotonic()
        # a's next heartbeat finds its lease gone: routes, lists and shown marks again.
        online_at = await wait_push(watcher, bob, "online", back_at, REAP_STEP + 40 * TICK)
        assert await query(watcher, bob, "back") == "online"
        await watcher.send(type="send", cid=cid, cmid="after-cut", body="still there?", rid="s")
        (msg,) = await target.wait_for("msg", cid=cid, timeout=40 * TICK)
        assert msg["body"] == "still there?"
        assert not target.of("close"), "bob's socket on the cut-off node was held throughout"
    finally:
        await watcher.close()
        await target.close()
    assert a.proc is not None and a.proc.poll() is None, "the cut-off node died"
    record(
        "leases[cut off past the ttl]",
        offline_after_cut_s=round(offline_at - cut_at, 2),
        online_after_restore_s=round(online_at - back_at, 2),
        ttl_s=TTL,
    )
