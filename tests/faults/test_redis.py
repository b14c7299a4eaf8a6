"""Redis killed and restarted from its AOF, and wiped: nodes resume by themselves (P1, P3, P7).

Redis carries only routes, delivery streams and caches: while it is down, sends still commit
and ack (PostgreSQL is up), live delivery between nodes pauses, and recipients get the
messages by ``sync``. After it returns, the nodes' readers and publishers reconnect without help
and live delivery resumes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import asyncpg
import pytest

from tests.faults.conftest import NODE_ENV, Cluster, World
from tests.faults.harness import check
from tests.faults.results import record
from tests.faults.services import PrivateServices
from tests.faults.wsclient import Recorder
from tests.support import TICK


@pytest.mark.parametrize("wipe", [False, True], ids=["aof_restart", "wiped"])
async def test_redis_lost_and_back_loses_nothing_and_live_delivery_resumes(
    wipe: bool,
    cluster: Cluster,
    world: World,
    private: PrivateServices,
    pdb: asyncpg.Pool[asyncpg.Record],
) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    urls = [cluster.url(a), cluster.url(b)]
    workload, peers, history = await world.workload(urls, seed=11, interval=TICK, burst=2)
    workload.start()
    try:
        await workload.wait_connected()
        await asyncio.sleep(20 * TICK)
        down_at = time.monotonic()
        if wipe:
            private.wipe_redis()
        else:
            private.kill_redis()
        # PostgreSQL is up: sends keep committing and being acked while Redis is away.
        await workload.acks_since(down_at, 20)
        await asyncio.sleep(40 * TICK)
        private.start_redis()
        back_at = time.monotonic()
        # Live delivery between the nodes resumes by itself.
        cross = [t for t, _, _, across in history.deliveries if across]
        async with asyncio.timeout(400 * TICK):
            while not any(t > back_at for t in cross):
                await asyncio.sleep(TICK)
                cross = [t for t, _, _, across in history.deliveries if across]
        resumed = min(t for t in cross if t > back_at)
        live_before = sum(t < down_at for t in cross)
        # Entries read just before the kill may still arrive; after that, nothing crosses.
        live_while_down = sum(down_at + 10 * TICK < t < back_at for t in cross)
        await asyncio.sleep(20 * TICK)
        cross = [t for t, _, _, across in history.deliveries if across]
        live_after = sum(t > back_at for t in cross)
        acked_while_down = sum(down_at < t < back_at for t in history.ack_times)
        await workload.settle()
    finally:
        await workload.close()
    assert a.proc is not None and b.proc is not None
    assert a.proc.poll() is None and b.proc.poll() is None, "a node died with Redis"
    verdict = await check(pdb, history, peers)
    record(
        f"redis[{'wiped' if wipe else 'aof_restart'}]",
        summary=verdict.summary(),
        acked_while_redis_down=acked_while_down,
        cross_node_live_before=live_before,
        cross_node_live_while_down=live_while_down,
        cross_node_live_in_1s_after=live_after,
        live_delivery_resumed_after_s=round(resumed - back_at, 2),
    )
    assert not verdict.problems, f"{verdict.problems} ({verdict.summary()})"
    assert verdict.acked == verdict.attempted == verdict.stored
    assert acked_while_down > 0


async def test_presence_reconverges_within_one_heartbeat_ttl_after_redis_is_wiped(
    cluster: Cluster, world: World, private: PrivateServices
) -> None:
    """P7: presence lives in Redis only; after a wipe the heartbeats rebuild it by themselves."""
    a, b = cluster.node("a"), cluster.node("b")
    alice, bob = await world.user(), await world.user()
    await world.conversation(alice, bob)
    asker = await Recorder.open(cluster.url(a), world.make_token(alice))
    target = await Recorder.open(cluster.url(b), world.make_token(bob))
    ttl = float(NODE_ENV["MM_PRESENCE_TTL_S"])
    queries = iter(range(10_000))

    async def state() -> str:
        rid = f"p{next(queries)}"
        await asker.send(type="presence", users=[bob], rid=rid)
        answer = [f for _, f in asker.frames if f.get("rid") == rid]
        async with asyncio.timeout(100 * TICK):
            while not answer:
                await asyncio.sleep(TICK / 5)
                answer = [f for _, f in asker.frames if f.get("rid") == rid]
        frame = answer[0]
        return str(frame["code"] if frame["type"] == "error" else frame["users"][0]["state"])

    async def until_online(since: float) -> list[str]:
        seen: list[str] = []
        while time.monotonic() - since < 2 * ttl:
            seen.append(await state())
            if seen[-1] == "online":
                break
            await asyncio.sleep(2 * TICK)
        return seen

    try:
        # Bob's node announces his route just after his `ready`: another node sees it shortly.
        first = await until_online(time.monotonic())
        assert first[-1] == "online", first
        private.wipe_redis()
        assert await state() == "unavailable"  # retryable: Redis cannot be read
        private.start_redis()
        back_at = time.monotonic()
        seen = await until_online(back_at)
        converged = time.monotonic() - back_at
    finally:
        await asker.close()
        await target.close()
    record(
        "presence[redis wiped]",
        converged_after_s=round(converged, 2),
        ttl_s=ttl,
        states=dict(Counter(seen)),
    )
    assert seen and seen[-1] == "online", seen
    assert converged <= ttl + 10 * TICK, f"presence took {converged:.1f}s (ttl {ttl}s)"
