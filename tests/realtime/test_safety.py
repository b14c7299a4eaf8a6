"""Safety events from the real API reach every node: bans, token bumps, blocks, unmatches.

Each test drives the real API routes (which publish on the safety stream after their commit)
against two real nodes, and checks the effect on real sockets within about a second, in both
directions, including a message already in flight when the block lands.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from common.codes import Close, Err
from tests.api import conftest as api_conftest
from tests.api.conftest import UserFactory
from tests.realtime.conftest import Client, Nodes, client, open_client, start_node
from tests.realtime.test_integration_api import SECOND, chat, matched_pair
from tests.support import TICK

user_factory = api_conftest.user_factory
REFUSED = {Err.NOT_MEMBER.value, Err.BLOCKED.value}


async def closed_within(sockets: list[Client], limit: float) -> list[int]:
    """Close codes of ``sockets``; fails unless every one closed within ``limit`` seconds."""
    started = time.monotonic()
    codes = await asyncio.gather(*(s.closed(timeout=limit) for s in sockets))
    assert time.monotonic() - started < limit
    return list(codes)


async def refused(c: Client, **frame: Any) -> str:
    """Send a frame that must be refused; return its error code."""
    answer = await c.request(**frame)
    assert answer["type"] == "error", answer
    return str(answer["code"])


async def test_an_admin_ban_closes_the_users_sockets_on_both_nodes_within_a_second(
    nodes: Nodes, api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    admin, victim, bystander = (
        await user_factory(is_admin=True),
        await user_factory(),
        await user_factory(),
    )
    sockets = [await client(nodes.a, victim.token), await client(nodes.b, victim.token)]
    other = await client(nodes.a, bystander.token)
    response = await api.post(
        f"/api/admin/users/{victim.id}/ban",
        json={"duration_s": 3600, "reason": "spam"},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    assert await closed_within(sockets, SECOND) == [Close.ACCOUNT_DISABLED] * 2
    # The same token cannot come back; other users' sockets are untouched.
    again = await open_client(nodes.b, victim.token)
    assert await again.closed() in (Close.REVOKED, Close.ACCOUNT_DISABLED)
    assert (await other.request(type="ping"))["type"] == "pong"
    await other.close()


async def test_logout_everywhere_closes_sockets_with_older_tokens_only(
    nodes: Nodes,
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    make_token: Callable[..., str],
) -> None:
    user = await user_factory()
    old = [await client(nodes.a, user.token), await client(nodes.b, user.token)]
    response = await api.post("/api/auth/logout-all", headers=user.headers)
    assert response.status_code == 204, response.text
    assert await closed_within(old, SECOND) == [Close.REVOKED] * 2
    # A token of the new version is welcome, and a later replay of the bump leaves it open.
    fresh = await client(nodes.a, make_token(user.id, token_version=1))
    assert (await fresh.request(type="ping"))["type"] == "pong"
    await fresh.close()


async def test_a_block_through_the_api_cuts_messages_typing_and_receipts_both_ways(
    nodes: Nodes,
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    db: asyncpg.Pool[asyncpg.Record],
) -> None:
    # Node X stalls for a while after its second commit, before fanning out: the message is
    # committed and in flight while the block lands on node B.
    x = start_node("x", MM_FAILPOINTS="after_commit_before_fanout=delay:2.0@2")
    try:
        p = await matched_pair(api, user_factory)
        a = await client(f"ws://127.0.0.1:{x.port}/", p.alice.token)
        b = await client(nodes.b, p.bob.token)
        await chat(a, b, p.cid, "before the block")

        cmid = await a.send_msg(p.cid, "in flight")
        for _ in range(40):  # committed (but not yet fanned out) before the block
            if await db.fetchval("SELECT 1 FROM messages WHERE cmid = $1", cmid):
                break
            await asyncio.sleep(TICK)
        else:
            raise AssertionError("the in-flight message was never committed")
        response = await api.post(
            "/api/blocks", json={"user_id": p.alice.id}, headers=p.bob.headers
        )
        assert response.status_code == 201, response.text
        await a.expect("ack", cmid=cmid, timeout=2 * SECOND + 40 * TICK)  # acked: it is stored
        await b.quiet("msg", within=10 * TICK)
        await asyncio.sleep(4 * TICK)  # node X, out of its stall, reads the block too

        # After the block, in both directions: sends, typing and receipts are refused or
        # dropped, whatever each side's node.
        assert await refused(b, type="send", cid=p.cid, cmid="after-1", body="hi?") in REFUSED
        assert await refused(a, type="send", cid=p.cid, cmid="after-2", body="hi?") in REFUSED
        assert await refused(b, type="typing", cid=p.cid) in REFUSED
        assert await refused(a, type="typing", cid=p.cid) in REFUSED
        assert await refused(b, type="read", cid=p.cid, seq=2) in REFUSED
        assert await refused(a, type="read", cid=p.cid, seq=1) in REFUSED
        await a.quiet("typing", within=4 * TICK)
        await b.quiet("typing", within=4 * TICK)
        await a.quiet("read", within=4 * TICK)
        await b.quiet("read", within=4 * TICK)
        await a.close()
        await b.close()
    finally:
        x.stop()


async def test_an_unblock_does_not_reopen_the_conversation(
    nodes: Nodes, api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    p = await matched_pair(api, user_factory)
    a = await client(nodes.a, p.alice.token)
    b = await client(nodes.b, p.bob.token)
    blocked = await api.post("/api/blocks", json={"user_id": p.bob.id}, headers=p.alice.headers)
    assert blocked.status_code == 201, blocked.text
    unblocked = await api.delete(f"/api/blocks/{p.bob.id}", headers=p.alice.headers)
    assert unblocked.status_code == 204, unblocked.text
    await asyncio.sleep(10 * TICK)  # the unblock's cache reload has landed
    assert await refused(b, type="send", cid=p.cid, cmid="u-1", body="back?") in REFUSED
    await a.quiet("msg", within=4 * TICK)
    await a.close()
    await b.close()


async def test_an_unmatch_through_the_api_stops_sends_and_typing_on_the_realtime_server(
    nodes: Nodes, api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    p = await matched_pair(api, user_factory)
    a = await client(nodes.a, p.alice.token)
    b = await client(nodes.b, p.bob.token)
    await chat(a, b, p.cid, "still matched")
    response = await api.delete(f"/api/matches/{p.match_id}", headers=p.alice.headers)
    assert response.status_code == 204, response.text
    await asyncio.sleep(SECOND)
    assert await refused(b, type="send", cid=p.cid, cmid="um-1", body="?") == Err.NOT_MEMBER
    assert await refused(a, type="send", cid=p.cid, cmid="um-2", body="?") == Err.NOT_MEMBER
    assert await refused(b, type="typing", cid=p.cid) == Err.NOT_MEMBER
    await a.quiet("typing", within=4 * TICK)
    await a.close()
    await b.close()


async def test_the_consumer_resumes_from_its_last_id_after_its_redis_connection_is_cut(
    nodes: Nodes, api: httpx.AsyncClient, user_factory: UserFactory, redis: Redis
) -> None:
    admin, victim = await user_factory(is_admin=True), await user_factory()
    c = await client(nodes.a, victim.token)
    name = f"rt:{c.ready['node']}:safety"
    killed = [x["id"] for x in await redis.client_list() if x.get("name") == name]
    assert killed, "the node's safety reader has no connection of its own"
    for client_id in killed:
        await redis.client_kill_filter(_id=client_id)
    # Published while the reader is reconnecting: read from the last id once it is back.
    response = await api.post(
        f"/api/admin/users/{victim.id}/ban",
        json={"permanent": True, "reason": "scam"},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    assert await closed_within([c], 2 * SECOND) == [Close.ACCOUNT_DISABLED]
    back = [x for x in await redis.client_list() if x.get("name") == name]
    assert back and {x["id"] for x in back}.isdisjoint(killed)
