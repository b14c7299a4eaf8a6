"""The node's WebSocket transport on real sockets: what the library's asyncio server used to do.

Fragmented messages, invalid UTF-8, frames sent before the answer to an awaited action, plain
HTTP on the WebSocket port, keepalive pings (a peer that never answers is closed, one that does
stays), and the closing handshake started by the client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.frames import CLOSE, Close
from websockets.protocol import CONNECTING
from websockets.uri import parse_uri

from tests.realtime.conftest import WAIT, Nodes, client, open_client, start_node
from tests.support import TICK, ServiceProcess

HEARTBEAT_S = 4 * TICK


@pytest.fixture(scope="module")
def fast_pings() -> Iterator[ServiceProcess]:
    """A node of its own that pings every few ticks."""
    proc = start_node("pings", MM_HEARTBEAT_S=str(HEARTBEAT_S))
    try:
        yield proc
    finally:
        assert proc.stop() == 0, f"node did not stop cleanly, see {proc.log_path}"


async def test_a_fragmented_message_is_reassembled(
    nodes: Nodes, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    c = await client(nodes.a, make_token(await new_user()))
    await c.ws.send(['{"type": "ping", ', '"rid": "fr', 'agments"}'])
    assert (await c.next())["rid"] == "fragments"
    await c.close()


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(
    nodes: Nodes, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    c = await client(nodes.a, make_token(await new_user()))
    await c.ws.send(b'{"type": "ping", "rid": "\xff"}', text=True)
    assert await c.closed() == 1007


async def test_frames_sent_while_auth_is_awaited_are_answered_in_order(
    nodes: Nodes, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    c = await open_client(nodes.b)
    frames = [{"type": "auth", "token": make_token(await new_user()), "rid": "auth"}]
    frames += [{"type": "ping", "rid": f"p{i}"} for i in range(40)]  # past the backlog mark
    for frame in frames:
        await c.ws.send(json.dumps(frame))
    answers = [await c.next() for _ in frames]
    assert [a["rid"] for a in answers] == [f["rid"] for f in frames]
    assert [a["type"] for a in answers[:2]] == ["ready", "pong"]
    await c.close()


async def test_plain_http_on_the_websocket_port(nodes: Nodes) -> None:
    async with httpx.AsyncClient(base_url=nodes.a.replace("ws://", "http://"), timeout=WAIT) as h:
        assert (await h.get("/healthz")).text == "ok\n"
        refused = await h.get("/")  # not an upgrade request: the library's answer
        assert refused.status_code == 426 and refused.headers["upgrade"] == "websocket"


async def test_a_client_that_answers_pings_stays_open(
    fast_pings: ServiceProcess, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    c = await client(f"ws://127.0.0.1:{fast_pings.port}/", make_token(await new_user()))
    await asyncio.sleep(4 * HEARTBEAT_S)
    assert (await c.request(type="ping"))["type"] == "pong"
    await c.close()


async def test_a_peer_that_never_answers_pings_is_closed_with_1011(
    fast_pings: ServiceProcess, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    url = f"ws://127.0.0.1:{fast_pings.port}/"
    proto = ClientProtocol(parse_uri(url))
    request = proto.connect()
    request.headers["Authorization"] = f"Bearer {make_token(await new_user())}"
    proto.send_request(request)
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        for data in proto.data_to_send():
            writer.write(data)
        close: Close | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while close is None and loop.time() < deadline:
            data = await asyncio.wait_for(reader.read(65536), deadline - loop.time())
            if not data:
                break
            proto.receive_data(data)
            proto.data_to_send()  # the pongs: never written
            for event in proto.events_received():
                if getattr(event, "opcode", None) is CLOSE:
                    close = Close.parse(event.data)  # type: ignore[union-attr]
        assert proto.state is not CONNECTING
        assert close is not None and (close.code, close.reason) == (1011, "keepalive ping timeout")
    finally:
        writer.close()


async def test_a_close_from_the_client_completes_the_handshake(
    nodes: Nodes, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    c = await client(nodes.a, make_token(await new_user()))
    await asyncio.wait_for(c.ws.close(code=1000, reason="bye"), 10 * TICK)
    assert c.ws.protocol.close_rcvd is not None and c.ws.protocol.close_rcvd.code == 1000


@pytest.fixture(scope="module")
def deflate_node() -> Iterator[ServiceProcess]:
    """A node that offers permessage-deflate."""
    proc = start_node("deflate", MM_WS_COMPRESSION="true")
    try:
        yield proc
    finally:
        assert proc.stop() == 0, f"node did not stop cleanly, see {proc.log_path}"


async def test_with_deflate_negotiated_frames_go_through_the_library(
    deflate_node: ServiceProcess, request: pytest.FixtureRequest
) -> None:
    fixture = request.getfixturevalue  # the usual trio of fixtures, by name
    new_user, make_token = fixture("new_user"), fixture("make_token")
    alice, bob = await new_user(), await new_user()
    cid = await fixture("new_conversation")(alice, bob)
    url = f"ws://127.0.0.1:{deflate_node.port}/"
    sockets = [await client(url, make_token(u), compression="deflate") for u in (alice, bob)]
    assert all(c.ws.protocol.extensions for c in sockets), "deflate was not negotiated"
    cmid = await sockets[0].send_msg(cid, "squeeze " * 100)
    assert (await sockets[0].expect("ack", cmid=cmid))["seq"] == 1
    assert (await sockets[1].expect("msg", cmid=cmid))["body"] == "squeeze " * 100
    for c in sockets:
        await c.close()
