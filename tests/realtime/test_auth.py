"""Authentication on a real node: every bad token has its close code; refresh keeps a socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from websockets.exceptions import InvalidStatus

from common.codes import Close, is_reconnect, is_terminal
from common.rediskeys import get_token_version, set_token_version
from common.settings import Settings
from common.tokens import KeySet, issue_token, write_key_pair
from tests.realtime.conftest import Nodes, client, open_client
from tests.support import TICK


async def test_auth_frame_within_the_timeout_opens_the_socket(
    nodes: Nodes, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    user = await new_user()
    c = await open_client(nodes.b)
    await c.send(type="auth", token=make_token(user), rid="hello")
    ready = await c.expect("ready")
    assert (ready["user"], ready["rid"], ready["limits"]["max_body_chars"]) == (user, "hello", 4000)
    assert ready["expires_at"] > time.time() * 1000
    assert (await c.request(type="ping"))["type"] == "pong"
    await c.close()


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("expired", Close.TOKEN_EXPIRED),
        ("wrong_signature", Close.BAD_TOKEN),
        ("garbage", Close.BAD_TOKEN),
        ("refresh_token", Close.BAD_TOKEN),
        ("revoked_in_db", Close.REVOKED),
        ("banned", Close.ACCOUNT_DISABLED),
    ],
)
async def test_each_bad_token_closes_with_its_code(
    case: str,
    code: Close,
    nodes: Nodes,
    new_user: Callable[..., Any],
    make_token: Callable[..., str],
    keys: KeySet,
    settings: Settings,
    redis: Redis,
    db: asyncpg.Pool[asyncpg.Record],
    tmp_path: Path,
) -> None:
    user = await new_user(token_version=2 if case == "revoked_in_db" else 0)
    token = make_token(user, token_version=0)
    if case == "expired":
        token = make_token(user, now=time.time() - 100, ttl_s=10)
    elif case == "wrong_signature":
        # Same kid, another key: only the signature can tell them apart.
        assert keys.active_kid is not None
        write_key_pair(tmp_path, kid=keys.active_kid)
        forged = KeySet.load(tmp_path, active_kid=keys.active_kid)
        token = issue_token(
            forged,
            user_id=user,
            token_version=0,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            ttl_s=60,
        )
    elif case == "garbage":
        token = "not.a.jwt"
    elif case == "refresh_token":
        token = make_token(user, typ="refresh")
    elif case == "banned":
        await db.execute(
            "UPDATE users SET banned_until = now() + interval '1 day' WHERE id = $1", user
        )
    for url in (nodes.a, nodes.b):
        c = await open_client(url, token)
        assert await c.closed() == code
    # The same token sent in an auth frame is refused the same way.
    c = await open_client(nodes.a)
    await c.send(type="auth", token=token)
    assert await c.closed() == code
    if case == "revoked_in_db":
        # The version read from PostgreSQL was cached in Redis for the next node.
        assert await get_token_version(redis, user) == 2
    assert is_terminal(code) or code == Close.TOKEN_EXPIRED


async def test_no_token_within_the_timeout_closes_with_auth_timeout(nodes: Nodes) -> None:
    c = await open_client(nodes.a)
    started = time.monotonic()
    assert await c.closed(timeout=60 * TICK) == Close.AUTH_TIMEOUT
    assert time.monotonic() - started >= 15 * TICK
    assert is_reconnect(Close.AUTH_TIMEOUT)


async def test_a_frame_before_auth_is_a_protocol_violation(nodes: Nodes) -> None:
    c = await open_client(nodes.a)
    await c.send(type="ping")
    assert await c.closed() == Close.PROTOCOL_VIOLATION


async def test_a_token_in_the_query_string_is_refused(
    nodes: Nodes, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    token = make_token(await new_user())
    for query in (f"?token={token}", f"?access_token={token}", f"?x={token}"):
        c = await open_client(nodes.a + query, token)
        assert await c.closed() == Close.TOKEN_IN_QUERY


async def test_origins_are_checked_against_the_allow_list(
    nodes: Nodes, new_user: Callable[..., Any], make_token: Callable[..., str], settings: Settings
) -> None:
    token = make_token(await new_user())
    with pytest.raises(InvalidStatus) as refused:
        await open_client(nodes.a, token, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    c = await client(nodes.a, token, origin=settings.allowed_origins[0])
    await c.close()


async def test_a_lapsing_token_closes_while_a_refreshed_one_stays_open(
    nodes: Nodes, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    user = await new_user()
    lapsing = await client(nodes.a, make_token(user, ttl_s=2))
    refreshed = await client(nodes.b, make_token(user, ttl_s=2))
    for c in (lapsing, refreshed):
        notice = await c.expect("reauth", timeout=60 * TICK)
        assert notice["expires_at"] == c.ready["expires_at"]
    await refreshed.send(type="auth", token=make_token(user, ttl_s=60), rid="fresh")
    again = await refreshed.expect("ready", rid="fresh")
    assert again["expires_at"] > refreshed.ready["expires_at"]
    assert await lapsing.closed(timeout=60 * TICK) == Close.TOKEN_LAPSED
    await asyncio.sleep(max(0.0, refreshed.ready["expires_at"] / 1000 - time.time()) + 4 * TICK)
    assert (await refreshed.request(type="ping"))["type"] == "pong"
    # A fresh token for someone else cannot take over the socket.
    await refreshed.send(type="auth", token=make_token(await new_user()))
    assert await refreshed.closed() == Close.BAD_TOKEN


async def test_connections_per_user_are_capped(
    nodes: Nodes, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    token = make_token(await new_user())
    open_ones = [await client(nodes.a, token) for _ in range(4)]
    extra = await open_client(nodes.a, token)
    assert await extra.closed() == Close.TOO_MANY_CONNECTIONS
    # The cap is per node; the others are untouched.
    assert (await open_ones[0].request(type="ping"))["type"] == "pong"
    for c in open_ones:
        await c.close()


async def test_postgresql_is_the_truth_over_a_stale_redis_copy(
    nodes: Nodes,
    new_user: Callable[..., Any],
    make_token: Callable[..., str],
    redis: Redis,
) -> None:
    """A bump whose Redis announcement failed leaves an old copy: it must not lock the user out
    (new token accepted, copy corrected), nor let an old token in."""
    user = await new_user(token_version=2)
    await set_token_version(redis, user, 0)  # stale: the API's announcement never arrived
    fresh = await open_client(nodes.a, make_token(user, token_version=2))
    assert (await fresh.expect("ready"))["type"] == "ready"
    await fresh.close()
    assert await get_token_version(redis, user) == 2
    old = await open_client(nodes.b, make_token(user, token_version=0))
    assert await old.closed() == Close.REVOKED


async def test_a_burst_authenticates_together_each_socket_with_its_own_account(
    nodes: Nodes,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
    db: asyncpg.Pool[asyncpg.Record],
) -> None:
    """Sockets authenticating at one moment share account reads (realtime/coalesce.py), yet
    each gets its own memberships and blocks, and a banned user or an old token among them is
    still refused."""
    pairs = [(await new_user(), await new_user()) for _ in range(12)]
    cids = {pair: await new_conversation(*pair) for pair in pairs}
    blocker, blocked = pairs[0]
    await db.execute(
        "INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2)", blocker, blocked
    )
    banned, revoked = await new_user(), await new_user(token_version=1)
    await db.execute("UPDATE users SET banned_until = now() + interval '1 h' WHERE id = $1", banned)
    # One user on two sockets of the burst: each socket must get its own copy.
    members = [user for pair in pairs for user in pair] + [pairs[1][0]]
    tokens = [make_token(user) for user in members] + [make_token(banned), make_token(revoked)]
    sockets = await asyncio.gather(*(open_client(nodes.a, token) for token in tokens))
    *ready, banned_socket, revoked_socket = sockets
    assert await banned_socket.closed() == Close.ACCOUNT_DISABLED
    assert await revoked_socket.closed() == Close.REVOKED
    every_cid = {cid: 0 for cid in cids.values()}
    for i, (user, c) in enumerate(zip(members, ready, strict=True)):
        assert (await c.expect("ready"))["user"] == user
        own = next(cid for pair, cid in cids.items() if user in pair)
        page = await c.request(type="sync", convs={str(k): v for k, v in every_cid.items()})
        assert sorted(page["gone"]) == sorted(set(every_cid) - {own}), (user, page)
        sent = await c.request(type="send", cid=own, cmid=f"burst{i}", body="hi")
        if user in (blocker, blocked):
            assert (sent["type"], sent["code"]) == ("error", "blocked"), sent
        else:
            assert sent["type"] == "ack", sent
    for c in ready:
        await c.close()
