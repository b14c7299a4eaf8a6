"""Chat across two real nodes: acks after commit, idempotent resends, order, sync, fan-out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
from redis.asyncio import Redis

from common.codes import Err
from common.rediskeys import delivery_stream
from tests.db_support import MEMBER_STATE_SQL, TOP_SEQ_SQL
from tests.realtime.conftest import Nodes, client, sync_all
from tests.support import ROOT, TICK


async def test_two_users_on_two_nodes_chat_both_ways_and_rows_exist_at_ack(
    nodes: Nodes,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
    db: asyncpg.Pool[asyncpg.Record],
) -> None:
    alice, bob = await new_user(), await new_user()
    cid = await new_conversation(alice, bob)
    a = await client(nodes.a, make_token(alice))
    b = await client(nodes.b, make_token(bob))
    assert a.ready["node"] != b.ready["node"]

    cmid = await a.send_msg(cid, "hi bob")
    ack = await a.expect("ack", cmid=cmid)
    # Acked means committed: the row is there the moment the ack is.
    row = await db.fetchrow(
        "SELECT seq, id, body, sender_id FROM messages WHERE sender_id = $1 AND cmid = $2",
        alice,
        cmid,
    )
    assert row is not None and (row["seq"], row["id"]) == (ack["seq"], ack["id"]) == (1, row["id"])
    msg = await b.expect("msg", cid=cid)
    assert (msg["seq"], msg["body"], msg["sender"], msg["cmid"]) == (1, "hi bob", alice, cmid)

    cmid2 = await b.send_msg(cid, "hi alice")
    assert (await b.expect("ack", cmid=cmid2))["seq"] == 2
    assert (await a.expect("msg", cid=cid))["body"] == "hi alice"
    # The sender's own socket gets the ack, not its own message back.
    await a.quiet("msg")
    counts = [await db.fetchrow(MEMBER_STATE_SQL, cid, user) for user in (alice, bob)]
    assert [tuple(row or ()) for row in counts] == [(0, 1), (0, 1)]
    assert await db.fetchval(TOP_SEQ_SQL, cid) == 2
    await a.close()
    await b.close()


async def test_duplicate_cmid_gets_the_original_ack_and_one_row(
    nodes: Nodes,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
    db: asyncpg.Pool[asyncpg.Record],
) -> None:
    alice, bob = await new_user(), await new_user()
    cid = await new_conversation(alice, bob)
    a1 = await client(nodes.a, make_token(alice))
    a2 = await client(nodes.b, make_token(alice))
    cmid = await a1.send_msg(cid, "once")
    first = await a1.expect("ack", cmid=cmid)
    # The same send again, on the same socket and from another node (a reconnect elsewhere).
    await a1.send_msg(cid, "once", cmid=cmid)
    await a2.send_msg(cid, "once", cmid=cmid)
    again = await a1.expect("ack", cmid=cmid)
    other = await a2.expect("ack", cmid=cmid)
    for dup in (again, other):
        assert (dup["id"], dup["seq"], dup["time"], dup["dup"]) == (
            first["id"],
            first["seq"],
            first["time"],
            True,
        )
    rows = await db.fetchval(
        "SELECT count(*) FROM messages WHERE sender_id = $1 AND cmid = $2", alice, cmid
    )
    assert rows == 1
    # A different body under the same cmid is refused and stores nothing.
    await a1.send(type="send", cid=cid, cmid=cmid, body="changed", rid="x1")
    error = await a1.expect("error", rid="x1")
    assert (error["code"], error["retryable"]) == (Err.CMID_CONFLICT, False)
    # The next new message takes seq 2: duplicates never consumed a seq.
    cmid2 = await a1.send_msg(cid, "second")
    assert (await a1.expect("ack", cmid=cmid2))["seq"] == 2
    await a1.close()
    await a2.close()


async def test_concurrent_senders_get_gapless_seq_and_everyone_sees_one_order(
    nodes: Nodes,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
) -> None:
    alice, bob = await new_user(), await new_user()
    cid = await new_conversation(alice, bob)
    a = await client(nodes.a, make_token(alice))
    b = await client(nodes.b, make_token(bob))
    per_sender = 40

    async def burst(c: Any, who: str) -> list[str]:
        return [await c.send_msg(cid, f"{who}-{i}") for i in range(per_sender)]

    sent_a, sent_b = await asyncio.gather(burst(a, "a"), burst(b, "b"))
    acks = [await a.expect("ack", cmid=c) for c in sent_a]
    acks += [await b.expect("ack", cmid=c) for c in sent_b]
    assert sorted(ack["seq"] for ack in acks) == list(range(1, 2 * per_sender + 1))
    # Each side sees the other's messages; together with its own acks that is the full order.
    seen_by_a = {m["seq"]: m["body"] for m in [await a.expect("msg") for _ in sent_b]}
    seen_by_b = {m["seq"]: m["body"] for m in [await b.expect("msg") for _ in sent_a]}
    order_a = seen_by_a | {ack["seq"]: f"a-{sent_a.index(ack['cmid'])}" for ack in acks[:40]}
    order_b = seen_by_b | {ack["seq"]: f"b-{sent_b.index(ack['cmid'])}" for ack in acks[40:]}
    assert order_a == order_b and sorted(order_a) == list(range(1, 81))
    # Per sender, seq follows the order the sender sent in (one socket is one ordered stream).
    assert [ack["seq"] for ack in acks[:40]] == sorted(ack["seq"] for ack in acks[:40])
    synced = await sync_all(a, {cid: 0})
    assert [m["seq"] for m in synced] == list(range(1, 81))
    assert {m["seq"]: m["body"] for m in synced} == order_a
    await a.close()
    await b.close()


async def test_offline_client_gets_exactly_what_it_missed_through_paged_sync(
    nodes: Nodes,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
) -> None:
    alice, bob, carol = await new_user(), await new_user(), await new_user()
    cid1 = await new_conversation(alice, bob)
    cid2 = await new_conversation(alice, carol)
    b = await client(nodes.b, make_token(bob))
    c = await client(nodes.a, make_token(carol))
    a = await client(nodes.a, make_token(alice))
    first = await b.send_msg(cid1, "seen live")
    await b.expect("ack", cmid=first)
    await a.expect("msg", cid=cid1, seq=1)
    await a.close()
    # Alice is offline: 7 messages in one conversation, 4 in another (pages of 5).
    for i in range(7):
        await b.expect("ack", cmid=await b.send_msg(cid1, f"b{i}"))
    for i in range(4):
        await c.expect("ack", cmid=await c.send_msg(cid2, f"c{i}"))
    a = await client(nodes.b, make_token(alice))
    missed = await sync_all(a, {cid1: 1, cid2: 0})
    assert [(m["cid"], m["seq"], m["body"]) for m in missed] == [
        *[(cid1, 2 + i, f"b{i}") for i in range(7)],
        *[(cid2, 1 + i, f"c{i}") for i in range(4)],
    ]
    # A foreign conversation in sync is reported gone and leaks nothing.
    other = await new_conversation(bob, carol)
    page = await a.request(type="sync", convs={str(other): 0}, all=False)
    assert (page["msgs"], page["end"], page["gone"]) == ([], True, [other])
    for x in (a, b, c):
        await x.close()


async def test_every_device_of_the_recipient_and_the_senders_other_devices_get_the_msg(
    nodes: Nodes,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
) -> None:
    alice, bob = await new_user(), await new_user()
    cid = await new_conversation(alice, bob)
    phone = await client(nodes.a, make_token(alice))
    laptop_a = await client(nodes.a, make_token(alice))
    laptop_b = await client(nodes.b, make_token(alice))
    bobs = [await client(nodes.a, make_token(bob)), await client(nodes.b, make_token(bob))]
    cmid = await phone.send_msg(cid, "to every screen")
    await phone.expect("ack", cmid=cmid)
    for device in (laptop_a, laptop_b, *bobs):
        assert (await device.expect("msg", cmid=cmid))["body"] == "to every screen"
    await phone.quiet("msg")
    for device in (phone, laptop_a, laptop_b, *bobs):
        await device.close()


async def test_read_receipts_and_typing_reach_the_other_member_only(
    nodes: Nodes,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
    db: asyncpg.Pool[asyncpg.Record],
) -> None:
    alice, bob, eve = await new_user(), await new_user(), await new_user()
    cid = await new_conversation(alice, bob)
    await new_conversation(alice, eve)
    a = await client(nodes.a, make_token(alice))
    a2 = await client(nodes.b, make_token(alice))
    b = await client(nodes.b, make_token(bob))
    e = await client(nodes.a, make_token(eve))
    for i in range(3):
        await a.expect("ack", cmid=await a.send_msg(cid, f"m{i}"))
    assert tuple(await db.fetchrow(MEMBER_STATE_SQL, cid, bob) or ()) == (0, 3)

    await b.send(type="typing", cid=cid, on=True)
    notice = await a.expect("typing")
    assert (notice["cid"], notice["user"], notice["on"], notice["ttl_ms"] > 0) == (
        cid,
        bob,
        True,
        True,
    )
    await a2.expect("typing", user=bob)

    await b.send(type="read", cid=cid, seq=2)
    receipt = await a.expect("read")
    assert (receipt["cid"], receipt["user"], receipt["seq"]) == (cid, bob, 2)
    row = await db.fetchrow(MEMBER_STATE_SQL, cid, bob)
    assert row is not None and tuple(row) == (2, 1)
    # A receipt never moves backwards and is clamped to the conversation's head.
    await b.send(type="read", cid=cid, seq=99)
    assert (await a.expect("read"))["seq"] == 3
    await b.send(type="read", cid=cid, seq=1)
    assert (await a.expect("read"))["seq"] == 3

    # Neither typing nor receipts go back to their author or to anyone outside.
    await b.quiet("typing")
    await b.quiet("read")
    await e.quiet("typing")
    await e.quiet("read", within=TICK)
    for x in (a, a2, b, e):
        await x.close()


async def test_the_example_client_in_the_protocol_document_works(
    nodes: Nodes,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
    db: asyncpg.Pool[asyncpg.Record],
) -> None:
    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace("asyncio.run(main(", "# asyncio.run(main(")
    namespace: dict[str, Any] = {}
    exec(compile(code, "PROTOCOL.md", "exec"), namespace)
    alice, bob = await new_user(), await new_user()
    cid = await new_conversation(alice, bob)
    await namespace["main"](nodes.b, make_token(alice), cid)
    assert await db.fetchval("SELECT body FROM messages WHERE conversation_id = $1", cid) == "hi!"


async def test_a_node_resumes_its_delivery_stream_after_losing_redis_and_trims_it(
    nodes: Nodes,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
    redis: Redis,
) -> None:
    alice, bob = await new_user(), await new_user()
    cid = await new_conversation(alice, bob)
    a = await client(nodes.a, make_token(alice))
    b = await client(nodes.b, make_token(bob))
    reader = f"rt:{b.ready['node']}:reader"
    for round_ in range(3):
        # Cut node B's stream reader off; what A sends meanwhile waits in B's stream.
        clients = await redis.client_list()
        ids = [c["id"] for c in clients if c.get("name") == reader]
        assert ids, clients
        for client_id in ids:
            await redis.client_kill_filter(_id=client_id)
        cmid = await a.send_msg(cid, f"while cut {round_}")
        await a.expect("ack", cmid=cmid)
        assert (await b.expect("msg", cmid=cmid))["body"] == f"while cut {round_}"
    stream = delivery_stream(b.ready["node"])
    for _ in range(100):
        if await redis.xlen(stream) <= 1:
            break
        await asyncio.sleep(TICK)
    assert await redis.xlen(stream) <= 1
    await a.close()
    await b.close()


async def test_typing_is_delivered_at_most_once_and_never_replayed_to_a_later_socket(
    nodes: Nodes,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
) -> None:
    """P7: typing is ephemeral. A socket that connects later, on either node, and syncs from
    the start gets the conversation's messages but none of the typing that came before it."""
    alice, bob = await new_user(), await new_user()
    cid = await new_conversation(alice, bob)
    a = await client(nodes.a, make_token(alice))
    b = await client(nodes.b, make_token(bob))
    await b.send(type="typing", cid=cid, on=True)
    await a.expect("typing", user=bob, on=True)
    await b.expect("ack", cmid=await b.send_msg(cid, "after typing"))
    await b.send(type="typing", cid=cid, on=False)
    await a.expect("typing", user=bob, on=False)
    await a.quiet("typing")  # each notice came once

    for url in (nodes.a, nodes.b):
        later = await client(url, make_token(alice))
        synced = await sync_all(later, {cid: 0})
        assert [m["body"] for m in synced] == ["after typing"]
        await later.quiet("typing")
        await later.close()
    for c in (a, b):
        await c.close()
