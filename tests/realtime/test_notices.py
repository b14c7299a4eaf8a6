"""Offline-message notifications: real API, two real nodes, real PostgreSQL and Redis.

A message that reaches no socket of its recipient on any node makes one ``message``
notification per conversation, coalesced with a count until the recipient reads; live
recipients (on either node) get none; reads clear it; an unmatch or a block removes it. The
writer itself (``realtime/notices.py``) is also driven straight against the database for the
guards a live race would be needed to reach: closed conversations, blocks, reads, a database
that is down.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from common.rediskeys import route_key
from common.settings import Settings
from realtime import notices
from realtime.metrics import TALLY
from realtime.notices import MessageNotices
from realtime.store import create_pool
from tests.api import conftest as api_conftest
from tests.api.conftest import TestUser, UserFactory
from tests.realtime.conftest import Client, Nodes, client
from tests.realtime.test_integration_api import Pair, chat, matched_pair
from tests.realtime.test_ops import metric, scrape
from tests.support import TICK

user_factory = api_conftest.user_factory

#: Long enough for a node's notification writer to have written what it was going to write.
SETTLE = 20 * TICK


async def messages_of(api: httpx.AsyncClient, user: TestUser) -> list[dict[str, Any]]:
    page = (await api.get("/api/notifications", headers=user.headers)).json()
    return [item for item in page["items"] if item["kind"] == "message"]


async def eventually(
    probe: Callable[[], Awaitable[list[dict[str, Any]]]],
    done: Callable[[list[dict[str, Any]]], bool],
) -> list[dict[str, Any]]:
    """Poll ``probe`` until ``done`` holds (the writer is a background task), else fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE * 4
    while True:
        value = await probe()
        if done(value) or loop.time() > deadline:
            assert done(value), value
            return value
        await asyncio.sleep(TICK)


async def offline(redis: Redis, *users: TestUser) -> None:
    """Wait until no node routes to ``users`` any more (their sockets are closed)."""
    for _ in range(int(SETTLE * 4 / TICK)):
        if not any([await redis.zcard(route_key(u.id)) for u in users]):
            return
        await asyncio.sleep(TICK)
    raise AssertionError("routes still there")


async def alice_online(
    nodes: Nodes, api: httpx.AsyncClient, user_factory: UserFactory
) -> tuple[Pair, Client]:
    """A matched pair, alice connected to node A, bob to no node."""
    p = await matched_pair(api, user_factory)
    return p, await client(nodes.a, p.alice.token)


async def send_acked(sender: Client, cid: int, body: str) -> dict[str, Any]:
    cmid = await sender.send_msg(cid, body)
    return await sender.expect("ack", cmid=cmid)


async def two_for_bob(
    nodes: Nodes, api: httpx.AsyncClient, user_factory: UserFactory
) -> tuple[Pair, Client, dict[str, Any], list[dict[str, Any]]]:
    """Alice sends two messages to offline bob: the pair, her client, the second ack and
    bob's message notifications once one counts two."""
    p, a = await alice_online(nodes, api, user_factory)
    await send_acked(a, p.cid, "one")
    second = await send_acked(a, p.cid, "two")
    items = await eventually(
        lambda: messages_of(api, p.bob), lambda v: bool(v) and v[0]["payload"]["count"] == 2
    )
    return p, a, second, items


async def test_an_offline_recipient_gets_one_notification_with_the_count(
    nodes: Nodes, api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    port = int(nodes.a.rsplit(":", 1)[1].strip("/"))
    before = await scrape(port)
    p, a, second, items = await two_for_bob(nodes, api, user_factory)
    written = "mm_rt_message_notifications_total"
    grown = metric(await scrape(port), written, outcome="written") - metric(
        before, written, outcome="written"
    )
    assert grown >= 2  # other tests' nodes share node A: at least these two
    assert len(items) == 1
    assert items[0]["payload"] == {
        "user_id": p.alice.id,
        "conversation_id": p.cid,
        "count": 2,
        "seq": second["seq"],
    }
    assert items[0]["read_at"] is None
    assert await messages_of(api, p.alice) == []  # the sender is not notified
    unread = await api.get("/api/notifications/unread-count", headers=p.bob.headers)
    kinds = [
        i["kind"]
        for i in (await api.get("/api/notifications", headers=p.bob.headers)).json()["items"]
    ]
    assert unread.json()["unread"] == len(kinds) and kinds.count("message") == 1
    await a.close()


async def test_a_recipient_online_on_either_node_gets_none(
    nodes: Nodes, api: httpx.AsyncClient, user_factory: UserFactory, redis: Redis
) -> None:
    p, a = await alice_online(nodes, api, user_factory)
    for url in (nodes.b, nodes.a):  # on the other node, then on the sender's own
        b = await client(url, p.bob.token)
        await chat(a, b, p.cid, f"live on {url}")
        await b.close()
    await offline(redis, p.bob)
    # A message while bob is offline: the writer has caught up once it shows, and its count
    # of one says the live messages before it were not counted.
    third = await send_acked(a, p.cid, "while away")
    await eventually(lambda: messages_of(api, p.bob), bool)
    await asyncio.sleep(SETTLE)
    items = await messages_of(api, p.bob)
    assert [(i["payload"]["count"], i["payload"]["seq"]) for i in items] == [(1, third["seq"])]
    await a.close()


async def test_a_read_clears_it_and_a_later_offline_message_makes_a_new_one(
    nodes: Nodes, api: httpx.AsyncClient, user_factory: UserFactory, redis: Redis
) -> None:
    p, a, top, (first,) = await two_for_bob(nodes, api, user_factory)

    # Bob comes back on the other node and reads up to the first message only: still unread.
    b = await client(nodes.b, p.bob.token)
    await b.send(type="read", cid=p.cid, seq=top["seq"] - 1)
    await a.expect("read", cid=p.cid, seq=top["seq"] - 1)
    await asyncio.sleep(SETTLE)
    assert [i["read_at"] for i in await messages_of(api, p.bob)] == [None]
    # Up to the newest: read.
    await b.send(type="read", cid=p.cid, seq=top["seq"])
    await a.expect("read", cid=p.cid, seq=top["seq"])
    await eventually(lambda: messages_of(api, p.bob), lambda v: v[0]["read_at"] is not None)
    await b.close()
    await offline(redis, p.bob)

    later = await send_acked(a, p.cid, "three")
    items = await eventually(lambda: messages_of(api, p.bob), lambda v: len(v) == 2)
    assert items[0]["id"] != first["id"] and items[0]["read_at"] is None
    assert (items[0]["payload"]["count"], items[0]["payload"]["seq"]) == (1, later["seq"])

    # The REST read mark clears it too, in its own transaction.
    read = await api.post(
        f"/api/conversations/{p.cid}/read", json={"seq": later["seq"]}, headers=p.bob.headers
    )
    assert read.status_code == 200, read.text
    assert [i["read_at"] is not None for i in await messages_of(api, p.bob)] == [True, True]
    await a.close()


async def _notified_pair(
    nodes: Nodes, api: httpx.AsyncClient, user_factory: UserFactory
) -> tuple[Pair, Client]:
    p, a = await alice_online(nodes, api, user_factory)
    await send_acked(a, p.cid, "hello?")
    await eventually(lambda: messages_of(api, p.bob), bool)
    return p, a


async def test_a_block_or_an_unmatch_removes_it(
    nodes: Nodes,
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    db: asyncpg.Pool[asyncpg.Record],
) -> None:
    p, a = await _notified_pair(nodes, api, user_factory)
    blocked = await api.post("/api/blocks", json={"user_id": p.alice.id}, headers=p.bob.headers)
    assert blocked.is_success, blocked.text
    assert await _rows(db, p.bob.id) == []  # deleted, not only hidden
    # The node refuses further sends (the conversation is closed): nothing new either.
    await a.send_msg(p.cid, "still there?")
    assert (await a.expect("error"))["code"] in {"blocked", "conversation_closed", "not_member"}
    await asyncio.sleep(SETTLE)
    assert await _rows(db, p.bob.id) == []
    await a.close()

    q, a = await _notified_pair(nodes, api, user_factory)
    gone = await api.delete(f"/api/matches/{q.match_id}", headers=q.alice.headers)
    assert gone.is_success, gone.text
    assert await _rows(db, q.bob.id) == []
    assert await messages_of(api, q.bob) == []
    await a.close()


# --- the writer against the database --------------------------------------------------------


async def _writer(settings: Settings) -> tuple[asyncpg.Pool[asyncpg.Record], MessageNotices]:
    pool = await create_pool(settings.asyncpg_dsn, max_size=1, timeout_s=5.0)
    return pool, MessageNotices(pool, timeout_s=5.0, is_local=lambda _user: False)


async def _rows(db: asyncpg.Pool[asyncpg.Record], user: int) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT payload, read_at IS NOT NULL FROM notifications "
        "WHERE user_id = $1 AND kind = 'message' ORDER BY id",
        user,
    )
    return [(json.loads(r[0]), r[1]) for r in rows]


async def test_the_writer_coalesces_and_skips_closed_blocked_and_read(
    settings: Settings,
    db: asyncpg.Pool[asyncpg.Record],
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
) -> None:
    a, b, c, d = [await new_user() for _ in range(4)]
    cid, closed, blocked = (
        await new_conversation(a, b),
        await new_conversation(a, c, closed=True),
        await new_conversation(a, d),
    )
    await db.execute("INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2)", d, a)
    await db.execute(
        "UPDATE conversation_members SET last_read_seq = 5 WHERE conversation_id = $1", cid
    )
    pool, writer = await _writer(settings)
    try:
        writer.offline(cid, 5, a, [b])  # already read
        writer.offline(cid, 6, a, [b])
        writer.offline(cid, 7, a, [b])
        writer.offline(closed, 1, a, [c])
        writer.offline(blocked, 1, a, [d])
        assert await writer.flush()
        assert await _rows(db, b) == [
            ({"user_id": a, "conversation_id": cid, "count": 2, "seq": 7}, False)
        ]
        assert await _rows(db, c) == [] and await _rows(db, d) == []

        # A later batch adds to the unread row; a read below its newest message leaves it.
        writer.offline(cid, 8, a, [b])
        writer.read(b, cid, 6)
        assert await writer.flush()
        assert await _rows(db, b) == [
            ({"user_id": a, "conversation_id": cid, "count": 3, "seq": 8}, False)
        ]
        # A read that covers it, then a new message in the same round trip: read, and new.
        writer.read(b, cid, 8)
        await db.execute(
            "UPDATE conversation_members SET last_read_seq = 8 "
            "WHERE conversation_id = $1 AND user_id = $2",
            cid,
            b,
        )
        writer.offline(cid, 9, a, [b])
        assert await writer.flush()
        assert [(row[0]["count"], row[0]["seq"], row[1]) for row in await _rows(db, b)] == [
            (3, 8, True),
            (1, 9, False),
        ]
    finally:
        await pool.close()


async def test_the_writer_drops_and_counts_when_postgresql_is_down(
    settings: Settings,
) -> None:
    # A pool towards a port nothing listens on: the node's own pool while PostgreSQL is down.
    dsn = settings.asyncpg_dsn.rsplit("@", 1)[0] + "@127.0.0.1:9/none"
    pool = await create_pool(dsn, max_size=1, timeout_s=10 * TICK)
    writer = MessageNotices(pool, timeout_s=10 * TICK, is_local=lambda _user: False, queue_max=2)
    before = dict(TALLY.message_notices)
    try:
        writer.offline(1, 1, 2, [3, 4, 5])  # the third is over the queue bound
        writer.read(3, 1, 1)  # so is this one
        assert not await writer.flush()
        assert writer.pending == 0
    finally:
        await pool.close()
    assert TALLY.message_notices["dropped"] - before["dropped"] == 4
    assert TALLY.message_notices["written"] == before["written"]


async def test_the_statements_use_the_unread_message_index(
    db: asyncpg.Pool[asyncpg.Record],
) -> None:
    async with db.acquire() as con:
        await con.execute("SET enable_seqscan = off")
        for statement, args in (
            (notices.CLEAR_SQL, ([1], [1], [1])),
            (notices.UPSERT_SQL, ([1], [1], [2], [1])),
        ):
            plan = "\n".join(r[0] for r in await con.fetch(f"EXPLAIN {statement}", *args))
            assert "Seq Scan" not in plan, plan
        clear = "\n".join(
            r[0] for r in await con.fetch(f"EXPLAIN {notices.CLEAR_SQL}", [1], [1], [1])
        )
        assert "uq_notifications_unread_message" in clear, clear
