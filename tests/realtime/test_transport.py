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
from websockets.frames import CLOSE, PONG, TEXT, Close, Frame
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


class RawClient:
    """A client on a plain TCP stream with the library's sans-I/O client: every byte is ours."""

    def __init__(self, proto: ClientProtocol, reader: asyncio.StreamReader, writer: Any) -> None:
        self.proto, self.reader, self.writer = proto, reader, writer

    @classmethod
    async def connect(cls, url: str, token: str) -> RawClient:
        proto = ClientProtocol(parse_uri(url))
        request = proto.connect()
        request.headers["Authorization"] = f"Bearer {token}"
        proto.send_request(request)
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        raw = cls(proto, reader, writer)
        raw.write_pending()
        return raw

    def write_pending(self) -> None:
        for data in self.proto.data_to_send():
            self.writer.write(data)

    async def frames(self, until: Callable[[Frame], bool], *, answer: bool) -> list[Frame]:
        """Frames in until ``until`` holds for one (pings answered only if ``answer``)."""
        got: list[Frame] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while loop.time() < deadline:
            data = await asyncio.wait_for(self.reader.read(65536), deadline - loop.time())
            assert data, f"EOF after {got}"
            self.proto.receive_data(data)
            pending = self.proto.data_to_send()
            if answer:
                for chunk in pending:
                    self.writer.write(chunk)
            for event in self.proto.events_received():
                if isinstance(event, Frame):
                    got.append(event)
                    if until(event):
                        return got
        raise AssertionError(f"timed out after {got}")


async def test_a_peer_that_never_answers_pings_is_closed_with_1011(
    fast_pings: ServiceProcess, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    url = f"ws://127.0.0.1:{fast_pings.port}/"
    raw = await RawClient.connect(url, make_token(await new_user()))
    try:
        frames = await raw.frames(lambda f: f.opcode is CLOSE, answer=False)
        close = Close.parse(frames[-1].data)
        assert (close.code, close.reason) == (1011, "keepalive ping timeout")
    finally:
        raw.writer.close()


async def test_frames_cut_anywhere_and_mixed_with_control_frames_keep_their_order(
    nodes: Nodes, new_user: Callable[..., Any], make_token: Callable[..., str]
) -> None:
    raw = await RawClient.connect(nodes.a, make_token(await new_user()))
    try:
        assert b'"ready"' in (await raw.frames(lambda f: f.opcode is TEXT, answer=True))[-1].data
        rids = []
        for i in range(24):
            rid = f"r{i}"
            rids.append(rid)
            frame: dict[str, Any] = {"type": "ping", "rid": rid}
            if not i % 3:  # one past 125 bytes (a 16-bit length) between the short ones
                frame = {"type": "send", "cid": 10**12, "cmid": "c", "body": "y" * 300, "rid": rid}
            raw.proto.send_text(json.dumps(frame).encode())
            if i == 10:
                raw.proto.send_ping(b"mid!")
        stream = b"".join(raw.proto.data_to_send())
        for at in range(0, len(stream), 37):  # cuts headers, masks and payloads alike
            raw.writer.write(stream[at : at + 37])
            await raw.writer.drain()
            await asyncio.sleep(0)
        frames = await raw.frames(lambda f: f.opcode is TEXT and b'"r23"' in f.data, answer=True)
        texts = [json.loads(bytes(f.data)) for f in frames if f.opcode is TEXT]
        assert [t["rid"] for t in texts] == rids
        assert [t["type"] for t in texts[:3]] == ["error", "pong", "pong"]
        assert any(f.opcode is PONG and f.data == b"mid!" for f in frames)
    finally:
        raw.writer.close()


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


# Marked by hand: its service fixtures are taken inside the test (see tests/conftest.py).
@pytest.mark.integration
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
