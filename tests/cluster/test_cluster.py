"""Chat on a real Redis Cluster (3 masters, 3 replicas): users and nodes spread over its shards,
delivery across them, ``sync`` after a node's ``kill -9``, and a master's ``kill -9`` while
messages flow (nothing acked lost: PostgreSQL holds every row; delivery resumes once its
replica takes over, and ``sync`` fills the rest).

The cross-node, presence, safety and token tests of the usual suite also run here (listed in
``tests/cluster/conftest.py``); these need the cluster itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from common.redisclient import RedisClient
from common.rediskeys import USER_SLOTS, delivery_stream, route_key, user_group
from tests.cluster.support import kill_9, master_port_of, node_names, restart, wait_master_moves
from tests.faults.harness import check
from tests.faults.results import record
from tests.faults.support import NODE_ENV as FAULT_ENV
from tests.faults.support import World
from tests.realtime.conftest import Nodes, client, start_node, sync_all
from tests.support import TICK, ServiceProcess

#: The fault tests' node settings that matter here: short I/O bounds and presence TTL.
FAST = {k: FAULT_ENV[k] for k in ("MM_REALTIME_IO_TIMEOUT_S", "MM_PRESENCE_TTL_S")}


def ws(proc: ServiceProcess) -> str:
    return f"ws://127.0.0.1:{proc.port}/"


async def probe_readyz(
    procs: list[ServiceProcess], statuses: Counter[tuple[int, int]], reasons: Counter[str]
) -> None:
    """Count each node's ``/readyz`` answers, and the failed checks they name, until cancelled."""
    async with httpx.AsyncClient(timeout=20 * TICK) as http:
        while True:
            for proc in procs:
                with contextlib.suppress(httpx.HTTPError):
                    answer = await http.get(f"http://127.0.0.1:{proc.port}/readyz")
                    statuses[(proc.port, answer.status_code)] += 1
                    if answer.status_code != 200:
                        reasons.update(f"{proc.port}: {line}" for line in answer.text.splitlines())
            await asyncio.sleep(2 * TICK)


async def test_users_spread_over_the_shards_and_chat_across_nodes_and_shards(
    nodes: Nodes,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
    redis: RedisClient,
) -> None:
    assert USER_SLOTS > 1, "a cluster spreads users over several tags"
    pairs = [(await new_user(), await new_user()) for _ in range(8)]
    cids = [await new_conversation(a, b) for a, b in pairs]
    left = [await client(nodes.a, make_token(a)) for a, _ in pairs]
    right = [await client(nodes.b, make_token(b)) for _, b in pairs]
    users = [u for pair in pairs for u in pair]
    # Users' keys live on several shards, and so do the two nodes' streams' tags.
    assert len({user_group(u) for u in users}) > 1
    assert len(await node_names(redis, [route_key(u) for u in users])) > 1

    for (a, b), cid, ca, cb in zip(pairs, cids, left, right, strict=True):
        cmid = await ca.send_msg(cid, f"to {b}")
        await ca.expect("ack", cmid=cmid)
        cmid2 = await cb.send_msg(cid, f"to {a}")
        await cb.expect("ack", cmid=cmid2)
    for (a, b), cid, ca, cb in zip(pairs, cids, left, right, strict=True):
        assert (await cb.expect("msg", cid=cid, seq=1))["body"] == f"to {b}"
        assert (await ca.expect("msg", cid=cid, seq=2))["body"] == f"to {a}"
    for c in (*left, *right):
        await c.close()


async def test_sync_after_a_node_is_killed_returns_everything_acked(
    nodes: Nodes,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
) -> None:
    alice, bob = await new_user(), await new_user()
    cid = await new_conversation(alice, bob)
    doomed = start_node("kx", **FAST)
    try:
        a = await client(ws(doomed), make_token(alice))
        acked = []
        for i in range(12):
            cmid = await a.send_msg(cid, f"m{i}")
            acked.append((await a.expect("ack", cmid=cmid))["seq"])
        doomed.signal(signal.SIGKILL)
        assert doomed.proc is not None and doomed.proc.wait(20 * TICK) == -signal.SIGKILL
    finally:
        doomed.stop()
    # Alice's device reconnects to the other node; Bob was never online.
    again = await client(nodes.b, make_token(alice))
    b = await client(nodes.a, make_token(bob))
    for c in (again, b):
        got = await sync_all(c, {cid: 0})
        assert [(m["seq"], m["body"]) for m in got] == [(s, f"m{i}") for i, s in enumerate(acked)]
        await c.close()


@pytest.mark.fault
async def test_a_master_killed_mid_run_loses_nothing_acked_and_delivery_resumes(
    db: asyncpg.Pool[asyncpg.Record],
    make_token: Callable[..., str],
    redis: RedisClient,
) -> None:
    a, b = start_node("ma", **FAST), start_node("mb", **FAST)
    world = World(db, make_token)
    workload, peers, history = await world.workload([ws(a), ws(b)], seed=5, interval=TICK)
    # The victim: the master of node a's delivery stream (so cross-node delivery must move).
    stream = delivery_stream(f"ma-{a.port}")
    victim = master_port_of(stream)
    b_stream_on_victim = master_port_of(delivery_stream(f"mb-{b.port}")) == victim
    restarted = False
    statuses: Counter[tuple[int, int]] = Counter()
    reasons: Counter[str] = Counter()
    workload.start()
    try:
        await workload.wait_connected()
        await asyncio.sleep(20 * TICK)
        crossed_before = sum(across for *_, across in history.deliveries)
        killed_at = time.monotonic()
        probing = asyncio.create_task(probe_readyz([a, b], statuses, reasons))
        kill_9(victim)
        # PostgreSQL is up: sends keep committing and being acked while the shard fails over.
        await workload.acks_since(killed_at, 10)
        _, took_over_at = wait_master_moves(stream, victim)
        # Cross-node delivery through the promoted replica resumes by itself.
        async with asyncio.timeout(400 * TICK):
            while not any(t > took_over_at and across for t, *_, across in history.deliveries):
                await asyncio.sleep(TICK)
        resumed = min(t for t, *_, across in history.deliveries if across and t > took_over_at)
        probing.cancel()
        restart(victim)  # back as a replica of the new master
        restarted = True
        await asyncio.sleep(10 * TICK)
        await workload.settle()
    finally:
        await workload.close()
        if not restarted:
            restart(victim)
        for proc in (a, b):
            assert proc.proc is not None and proc.proc.poll() is None, "a node died"
            assert proc.stop() == 0, f"node did not stop cleanly, see {proc.log_path}"
    verdict = await check(db, history, peers)
    record(
        "cluster[master_kill9]",
        summary=verdict.summary(),
        acked_while_failing_over=sum(killed_at < t < took_over_at for t in history.ack_times),
        replica_took_over_after_s=round(took_over_at - killed_at, 2),
        cross_node_resumed_after_takeover_s=round(resumed - took_over_at, 2),
        node_readyz_during_failover={f"{port}:{code}": n for (port, code), n in statuses.items()},
        b_stream_on_the_lost_shard=b_stream_on_victim,
    )
    assert crossed_before > 0, "nothing crossed nodes before the kill"
    assert not verdict.problems, f"{verdict.problems} ({verdict.summary()})"
    assert verdict.acked == verdict.attempted == verdict.stored, verdict.summary()
    assert resumed - took_over_at < 400 * TICK
    # Readiness: node a's own stream was on the lost shard (its reader fails until the replica
    # takes over); node b's, if elsewhere, kept it ready: Redis's PING asks one reachable node.
    if not b_stream_on_victim:
        assert statuses[(b.port, 200)] > 0 and statuses[(b.port, 503)] == 0, (statuses, reasons)
