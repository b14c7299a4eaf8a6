"""A block racing in-flight deliveries: once a socket's node applied it, nothing more passes.

The receiving user probes its own sockets with ``typing`` frames: the first refusal on a socket
marks the moment its node applied the block, and frames on one socket are ordered, so no ``msg``
of the conversation may follow that refusal on that socket (docs/PROTOCOL.md, "Safety"). The
recipient has one socket on the sender's node (local fan-out) and one on the other node (the
delivery stream), while the sender keeps sending without waiting for acks.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from common import events
from common.codes import Err
from common.redisclient import redis_client
from tests.faults.conftest import Cluster, World
from tests.faults.results import record
from tests.faults.services import PrivateServices
from tests.faults.wsclient import Recorder
from tests.support import TICK

REFUSALS = {Err.NOT_MEMBER, Err.BLOCKED, Err.CONVERSATION_CLOSED}


async def test_nothing_is_delivered_after_a_block_is_applied(
    cluster: Cluster, world: World, private: PrivateServices, pdb: asyncpg.Pool[asyncpg.Record]
) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    alice, bob = await world.user(), await world.user()
    cid = await world.conversation(alice, bob)
    sender = await Recorder.open(cluster.url(a), world.make_token(alice))
    near = await Recorder.open(cluster.url(a), world.make_token(bob))
    far = await Recorder.open(cluster.url(b), world.make_token(bob))
    stop = asyncio.Event()

    async def send_forever() -> int:
        n = 0
        while not stop.is_set() and n < 2000:
            n += 1
            await sender.send(type="send", cid=cid, cmid=f"race{n}", body=f"m{n}", rid=f"s{n}")
            await asyncio.sleep(TICK / 10)
        return n

    async def probe(rec: Recorder) -> None:
        n = 0
        while not stop.is_set() and n < 2000:
            n += 1
            await rec.send(type="typing", cid=cid, on=n % 2 == 0, rid=f"t{n}")
            await asyncio.sleep(TICK / 5)

    redis = redis_client(private.redis_url)
    try:
        tasks = [
            asyncio.create_task(send_forever()),
            asyncio.create_task(probe(near)),
            asyncio.create_task(probe(far)),
        ]
        await asyncio.sleep(20 * TICK)
        await pdb.execute("INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2)", bob, alice)
        blocked_at = time.monotonic()
        await events.publish(redis, events.Block(blocker=bob, blocked=alice))
        await asyncio.sleep(40 * TICK)
        stop.set()
        sent = await tasks[0]
        await asyncio.gather(*tasks[1:])
        await asyncio.sleep(10 * TICK)
    finally:
        await redis.aclose()
        for rec in (sender, near, far):
            await rec.close()

    applied_after = {}
    for name, rec in (("near", near), ("far", far)):
        frames = [f for _, f in rec.frames]
        refused = [
            i
            for i, f in enumerate(frames)
            if f["type"] == "error" and f["code"] in REFUSALS and str(f.get("rid")).startswith("t")
        ]
        assert refused, f"{name}: the block was never applied"
        first = refused[0]
        delivered = [f for f in frames[:first] if f["type"] == "msg" and f["cid"] == cid]
        leaked = [f for f in frames[first:] if f["type"] in ("msg", "typing") and f["cid"] == cid]
        assert delivered, f"{name}: nothing was delivered before the block"
        assert not leaked, f"{name}: delivered after the block was applied: {leaked[:3]}"
        applied_after[name] = round(rec.frames[first][0] - blocked_at, 2)
    # Sends that were in flight committed and were acked to the sender, yet reached nobody.
    acked = sender.of("ack")
    stored = await pdb.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", cid)
    assert stored == len(acked)
    refused_sends = [f for f in sender.of("error") if f["code"] in REFUSALS]
    assert refused_sends, "the sender was never refused"
    record(
        "block_race",
        sent=sent,
        acked=len(acked),
        refused=len(refused_sends),
        delivered_near=len(near.of("msg")),
        delivered_far=len(far.of("msg")),
        applied_after_s=applied_after,
    )
