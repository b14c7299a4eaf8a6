"""Connections cut mid-frame and acks swallowed, through the fault proxy (P2, P4, P6)."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.faults.conftest import Cluster, World
from tests.faults.harness import check
from tests.faults.proxy import FaultProxy
from tests.faults.results import record
from tests.support import TICK, ServiceProcess


def _log_faults(node: ServiceProcess, offset: int) -> list[str]:
    """Error lines (tracebacks, failed connections) the node logged since ``offset``."""
    with node.log_path.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    return [line for line in lines if '"level": "error"' in line or "Traceback" in line]


async def _proxied(cluster: Cluster) -> tuple[list[ServiceProcess], list[FaultProxy]]:
    nodes = [cluster.node("a"), cluster.node("b")]
    proxies = [FaultProxy(n.port) for n in nodes]
    for proxy in proxies:
        await proxy.start()
    return nodes, proxies


async def test_connections_cut_mid_frame_lose_and_duplicate_nothing(
    cluster: Cluster, world: World, pdb: asyncpg.Pool[asyncpg.Record]
) -> None:
    nodes, proxies = await _proxied(cluster)
    offsets = [n.log_path.stat().st_size for n in nodes]
    workload, peers, history = await world.workload(
        [p.url for p in proxies], seed=31, interval=TICK, burst=2
    )
    workload.start()
    try:
        await workload.wait_connected()
        for round_ in range(6):
            proxies[round_ % 2].cut_next_upstream()
            await asyncio.sleep(8 * TICK)
        await workload.settle()
    finally:
        await workload.close()
        for proxy in proxies:
            await proxy.close()
    verdict = await check(pdb, history, peers)
    cuts = sum(p.cuts for p in proxies)
    record(
        "proxy[cut mid-frame]",
        summary=verdict.summary(),
        cuts=cuts,
        reconnects=sum(p.connections for p in peers) - len(peers),
    )
    assert cuts == 6
    assert not verdict.problems, f"{verdict.problems} ({verdict.summary()})"
    assert verdict.acked == verdict.attempted == verdict.stored
    assert sum(p.connections for p in peers) >= len(peers) + cuts
    for node, offset in zip(nodes, offsets, strict=True):
        assert not _log_faults(node, offset)


async def test_swallowed_acks_are_settled_by_resending_the_same_cmid(
    cluster: Cluster, world: World, pdb: asyncpg.Pool[asyncpg.Record]
) -> None:
    _nodes, proxies = await _proxied(cluster)
    workload, peers, history = await world.workload(
        [p.url for p in proxies], seed=32, interval=TICK, burst=2
    )
    workload.start()
    try:
        await workload.wait_connected()
        await asyncio.sleep(10 * TICK)
        for proxy in proxies:
            proxy.swallow_acks = 5
        await asyncio.sleep(20 * TICK)
        await workload.settle()
    finally:
        await workload.close()
        for proxy in proxies:
            await proxy.close()
    verdict = await check(pdb, history, peers)
    swallowed = sum(p.swallowed for p in proxies)
    # The ack a client finally saw for a swallowed one is the original, flagged dup.
    dup_first = sum(1 for op in history.ops.values() if op.ack is not None and op.ack.get("dup"))
    record(
        "proxy[acks swallowed]",
        summary=verdict.summary(),
        swallowed=swallowed,
        settled_by_dup_ack=dup_first,
    )
    assert swallowed == 10
    assert not verdict.problems, f"{verdict.problems} ({verdict.summary()})"
    assert verdict.acked == verdict.attempted == verdict.stored
    assert dup_first == swallowed
    assert history.attempts["unknown"] >= swallowed
