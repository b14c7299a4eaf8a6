"""Bad input, limits and faults on real nodes: error codes keep the socket, abuse closes it."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from common.codes import RETRYABLE, Close, Err
from common.rediskeys import set_token_version
from tests.realtime.conftest import WAIT, Client, Nodes, client, open_client, start_node
from tests.support import TICK, free_port


async def test_each_bad_input_gets_its_error_code_and_the_socket_stays_open(
    nodes: Nodes,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
    db: asyncpg.Pool[asyncpg.Record],
) -> None:
    alice, bob, eve, mallory = [await new_user() for _ in range(4)]
    cid = await new_conversation(alice, bob)
    foreign = await new_conversation(bob, eve)
    blocked_cid = await new_conversation(alice, mallory)
    closing_cid = await new_conversation(alice, eve)
    await db.execute("INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2)", mallory, alice)
    c = await client(nodes.a, make_token(alice))
    await db.execute("UPDATE conversations SET closed_at = now() WHERE id = $1", closing_cid)

    def send(**extra: Any) -> dict[str, Any]:
        return {"type": "send", "cid": cid, "cmid": "c1", "body": "hi"} | extra

    cases: list[tuple[str | dict[str, Any], Err]] = [
        ("{not json", Err.BAD_JSON),
        ("[1, 2]", Err.BAD_JSON),
        ({"type": "shout"}, Err.UNKNOWN_TYPE),
        ({"cid": cid}, Err.UNKNOWN_TYPE),
        ({"type": "send", "cid": cid, "body": "no cmid"}, Err.BAD_FIELD),
        (send(cid="seven"), Err.BAD_FIELD),
        (send(cid=0), Err.BAD_FIELD),
        (send(cmid="has space"), Err.BAD_FIELD),
        (send(kind="system"), Err.BAD_FIELD),
        (send(admin=True), Err.BAD_FIELD),
        (send(body="x\u0000y"), Err.BAD_FIELD),
        (send(body="x" * 4001), Err.BODY_TOO_LONG),
        (send(body="x" * 16_001), Err.BODY_TOO_LONG),
        (send(cid=foreign), Err.NOT_MEMBER),
        (send(cid=10**12), Err.NOT_MEMBER),
        (send(cid=blocked_cid), Err.BLOCKED),
        ({"type": "typing", "cid": blocked_cid}, Err.BLOCKED),
        ({"type": "read", "cid": foreign, "seq": 1}, Err.NOT_MEMBER),
        (send(cid=closing_cid), Err.CONVERSATION_CLOSED),
    ]
    for frame, code in cases:
        await c.ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        error = await c.expect("error")
        assert (error["code"], error["retryable"]) == (code, code in RETRYABLE), (frame, error)
        if isinstance(frame, dict) and "rid" in frame:
            assert error["rid"] == frame["rid"]
    assert (await c.request(type="ping"))["type"] == "pong"
    assert await db.fetchval("SELECT count(*) FROM messages WHERE sender_id = $1", alice) == 0
    await c.close()


async def test_errors_carry_the_request_id(
    nodes: Nodes, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    c = await client(nodes.b, make_token(await new_user()))
    answer = await c.request(type="send", cid=10**12, cmid="x", body="hi")
    assert (answer["type"], answer["code"]) == ("error", Err.NOT_MEMBER)
    await c.close()


async def test_the_rate_limit_refuses_with_a_retryable_code(
    nodes: Nodes, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    c = await client(nodes.a, make_token(await new_user()))
    burst = c.ready["limits"]["rate_burst"]
    for i in range(burst + 50):
        await c.send(type="ping", rid=f"p{i}")
    frames = [await c.next() for _ in range(burst + 50)]
    limited = [f for f in frames if f["type"] == "error"]
    assert limited and all(f["code"] == Err.RATE_LIMITED and f["retryable"] for f in limited)
    assert sum(f["type"] == "pong" for f in frames) >= burst
    await asyncio.sleep(10 * TICK)  # the bucket refills
    assert (await c.request(type="ping"))["type"] == "pong"
    await c.close()


async def test_protocol_abuse_closes_the_socket(
    nodes: Nodes, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    token = make_token(await new_user())
    c = await client(nodes.a, token)
    await c.ws.send(b"\x00binary")
    assert await c.closed() == Close.PROTOCOL_VIOLATION
    c = await client(nodes.a, token)
    await c.ws.send("x" * (65 * 1024))  # past max_frame_bytes
    assert await c.closed() == 1009


async def test_a_slow_reader_is_closed_while_the_others_keep_receiving(
    nodes: Nodes,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
) -> None:
    alice, bob = await new_user(), await new_user()
    cid = await new_conversation(alice, bob)
    sender = await client(nodes.a, make_token(alice))
    fast = await client(nodes.b, make_token(bob))
    # A reader with a tiny receive buffer that stops reading: its server-side buffer grows.
    port = int(nodes.b.rsplit(":", 1)[1].strip("/"))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    ws = await connect(
        nodes.b,
        sock=sock,
        additional_headers={"Authorization": f"Bearer {make_token(bob)}"},
        max_queue=1,
        open_timeout=WAIT,
    )
    slow = Client(ws)
    slow.ready = await slow.expect("ready")
    # 200 KB in all, sent in chunks of 40 KB: each burst fits under the 64 KB high-water mark
    # (a fast reader drains it), the total does not fit in the slow reader's buffers.
    count, chunk, body = 200, 40, "y" * 1000
    # The fast reader reads as the messages come (a task of its own), as a real client does.
    reading = asyncio.create_task(_collect(fast, count))
    for start in range(0, count, chunk):
        cmids = [await sender.send_msg(cid, f"{i:03d}{body}") for i in range(start, start + chunk)]
        for cmid in cmids:
            await sender.expect("ack", cmid=cmid)
    got = await reading
    assert [m["seq"] for m in got] == list(range(1, count + 1))
    assert await slow.closed(timeout=100 * TICK) == Close.SLOW_CONSUMER
    # The node is fine: a new message still reaches the fast reader at once.
    await sender.send_msg(cid, "after")
    assert (await fast.expect("msg", seq=count + 1))["body"] == "after"
    await sender.close()
    await fast.close()


async def _collect(c: Client, count: int) -> list[dict[str, Any]]:
    return [await c.expect("msg") for _ in range(count)]


@pytest.fixture
def dbless_node() -> Iterator[str]:
    """A node whose PostgreSQL is unreachable (nothing listens on its port)."""
    dead = f"postgresql+asyncpg://mergemeet@127.0.0.1:{free_port()}/nowhere"
    proc = start_node("nodb", MM_DATABASE_URL=dead, MM_REALTIME_IO_TIMEOUT_S=str(10 * TICK))
    try:
        yield f"ws://127.0.0.1:{proc.port}/"
    finally:
        assert proc.stop() == 0


async def test_postgresql_down_refuses_sends_with_a_retryable_code_and_keeps_sockets(
    dbless_node: str,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
    redis: Redis,
) -> None:
    alice, bob = await new_user(), await new_user()
    cid = await new_conversation(alice, bob)
    # The token version is cached in Redis, so the node can still authenticate.
    await set_token_version(redis, alice, 0)
    c = await client(dbless_node, make_token(alice))
    for frame in (
        {"type": "send", "cid": cid, "cmid": "pgdown", "body": "hi"},
        {"type": "sync", "convs": {str(cid): 0}},
    ):
        answer = await c.request(**frame)
        assert (answer["type"], answer["code"], answer["retryable"]) == (
            "error",
            Err.DB_UNAVAILABLE,
            True,
        )
    assert (await c.request(type="ping"))["type"] == "pong"
    await c.close()
    # Without a cached version nobody can vouch for the token: retry later (reconnect band).
    stranger = await new_user()
    c = await open_client(dbless_node, make_token(stranger))
    assert await c.closed() == Close.UNAVAILABLE
