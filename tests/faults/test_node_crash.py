"""``kill -9`` of a realtime node under load, at random moments and at each failpoint (P1-P6)."""

from __future__ import annotations

import asyncio
import random
import signal
import time

import asyncpg
import pytest

from tests.faults.conftest import Cluster, World
from tests.faults.harness import Verdict, check
from tests.faults.results import record
from tests.support import TICK


def _assert_clean(verdict: Verdict) -> None:
    assert not verdict.problems, f"{verdict.problems} ({verdict.summary()})"
    # Recovery resends every outbox entry until acked: nothing attempted stays unsettled.
    assert verdict.acked == verdict.attempted == verdict.stored, verdict.summary()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_kill_9_of_a_node_at_a_random_moment_loses_nothing_acked(
    seed: int, cluster: Cluster, world: World, pdb: asyncpg.Pool[asyncpg.Record]
) -> None:
    rng = random.Random(seed)
    a, b = cluster.node("a"), cluster.node("b")
    urls = [cluster.url(a), cluster.url(b)]
    workload, peers, history = await world.workload(urls, seed=seed, interval=TICK, burst=3)
    workload.start()
    try:
        await workload.wait_connected()
        await asyncio.sleep(rng.uniform(10, 30) * TICK)
        victim = rng.choice([a, b])
        assert victim.proc is not None
        acked_before = len(history.ack_times)
        victim.signal(signal.SIGKILL)
        victim.proc.wait()
        killed_at = time.monotonic()
        await asyncio.sleep(rng.uniform(4, 16) * TICK)
        cluster.restart(victim)
        resumed = await workload.acks_since(killed_at, 20)
        await asyncio.sleep(10 * TICK)
        await workload.settle()
        settled = time.monotonic()
    finally:
        await workload.close()
    verdict = await check(pdb, history, peers)
    record(
        f"kill9[seed={seed}]",
        summary=verdict.summary(),
        acked_before_kill=acked_before,
        first_ack_after_kill_s=round(resumed - killed_at, 2),
        longest_ack_gap_s=round(history.longest_ack_gap(workload.started, settled), 2),
        closes=dict(history.closes),
    )
    _assert_clean(verdict)
    assert history.attempts["unknown"] + sum(history.closes.values()) > 0, "the kill hit nobody"


@pytest.mark.parametrize(
    "point", ["before_commit", "after_commit_before_fanout", "after_fanout_before_ack"]
)
async def test_kill_at_a_failpoint_loses_nothing_acked(
    point: str, cluster: Cluster, world: World, pdb: asyncpg.Pool[asyncpg.Record]
) -> None:
    # Node a dies by itself the 30th time a batch passes the point, under load.
    a = cluster.node("a", MM_FAILPOINTS=f"{point}=kill@30")
    b = cluster.node("b")
    urls = [cluster.url(a), cluster.url(b)]
    workload, peers, history = await world.workload(urls, seed=7, interval=TICK, burst=3)
    workload.start()
    try:
        assert a.proc is not None
        for _ in range(600):
            if a.proc.poll() is not None:
                break
            await asyncio.sleep(TICK)
        assert a.proc.returncode == -signal.SIGKILL, "the failpoint never fired"
        killed_at = time.monotonic()
        cluster.restart(a, MM_FAILPOINTS="")
        resumed = await workload.acks_since(killed_at, 20)
        await asyncio.sleep(10 * TICK)
        await workload.settle()
        settled = time.monotonic()
    finally:
        await workload.close()
    verdict = await check(pdb, history, peers)
    dup_acks = sum(
        1 for op in history.ops.values() if op.ack is not None and op.ack.get("dup", False)
    )
    record(
        f"failpoint[{point}]",
        summary=verdict.summary(),
        first_ack_after_kill_s=round(resumed - killed_at, 2),
        longest_ack_gap_s=round(history.longest_ack_gap(workload.started, settled), 2),
        first_ack_was_dup=dup_acks,
    )
    _assert_clean(verdict)
