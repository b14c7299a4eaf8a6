"""Duplicate resends on one socket and on two sockets at once: one row, one ack (P2, P6)."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.faults.conftest import Cluster, World
from tests.faults.results import record
from tests.faults.wsclient import Recorder

COPIES = 5
CMIDS = 40


async def test_duplicate_resends_on_one_and_two_sockets_store_one_row_with_one_ack(
    cluster: Cluster, world: World, pdb: asyncpg.Pool[asyncpg.Record]
) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    alice, bob = await world.user(), await world.user()
    cid = await world.conversation(alice, bob)
    token = world.make_token(alice)
    one = await Recorder.open(cluster.url(a), token)
    # Two devices of the same user on two nodes, resending the same cmids at the same moment.
    left, right = (
        await Recorder.open(cluster.url(a), token),
        await Recorder.open(cluster.url(b), token),
    )
    try:

        async def burst(rec: Recorder, prefix: str, copies: int) -> None:
            for i in range(CMIDS):
                frame = {"cid": cid, "cmid": f"{prefix}{i}", "body": f"body {prefix}{i}"}
                for _ in range(copies):
                    await rec.send(type="send", **frame)

        await burst(one, "same-socket-", COPIES)
        await asyncio.gather(burst(left, "two-sockets-", 2), burst(right, "two-sockets-", 2))
        await one.wait_for("ack", CMIDS * COPIES)
        await left.wait_for("ack", CMIDS * 2)
        await right.wait_for("ack", CMIDS * 2)
    finally:
        for rec in (one, left, right):
            await rec.close()
    rows = await pdb.fetch(
        "SELECT cmid, id, seq FROM messages WHERE conversation_id = $1 ORDER BY seq", cid
    )
    stored = {r["cmid"]: (r["id"], r["seq"]) for r in rows}
    assert len(rows) == len(stored) == 2 * CMIDS
    assert [r["seq"] for r in rows] == list(range(1, 2 * CMIDS + 1))
    acks = one.of("ack") + left.of("ack") + right.of("ack")
    for cmid, (row_id, seq) in stored.items():
        mine = [x for x in acks if x["cmid"] == cmid]
        # Every copy is answered with the original ack; exactly one of them is the first.
        assert {(x["id"], x["seq"], x["time"]) for x in mine} == {(row_id, seq, mine[0]["time"])}
        assert sum(not x.get("dup", False) for x in mine) == 1, mine
    assert not one.of("error") and not left.of("error") and not right.of("error")
    record(
        "duplicates",
        cmids=2 * CMIDS,
        copies_sent=CMIDS * COPIES + CMIDS * 4,
        rows=len(rows),
        acks=len(acks),
        first_acks=sum(not x.get("dup", False) for x in acks),
    )
