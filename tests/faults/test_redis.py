"""Redis killed and restarted from its AOF, and Redis wiped: nodes resume by themselves (P1, P3).

Redis carries only routes, delivery streams and caches: while it is down, sends still commit
and ack (PostgreSQL is up), live delivery between nodes pauses, and recipients get the
messages by ``sync``. After it returns, the nodes' readers and publishers reconnect without help
and live delivery resumes.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.faults.conftest import Cluster, World
from tests.faults.harness import check
from tests.faults.results import record
from tests.faults.services import PrivateServices
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
