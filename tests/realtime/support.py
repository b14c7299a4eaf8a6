"""Helpers of the realtime tests: real nodes in child processes, and a JSON test client.

Node settings are shrunk (auth timeout, reauth window, high-water mark, sync page) so the
time-based behaviour fits in a short test run. The fixtures that use them (two shared nodes,
users and conversations straight in the test database) are in ``tests/realtime/conftest.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support import TICK, ServiceProcess, free_port

NODE_ENV = {
    "MM_AUTH_TIMEOUT_S": str(20 * TICK),
    "MM_REAUTH_BEFORE_S": "1",
    "MM_RATE_PER_S": "100",
    "MM_RATE_BURST": "300",
    "MM_MAX_CONNECTIONS_PER_USER": "4",
    "MM_OUTBOUND_HIGH_WATER": str(64 * 1024),
    "MM_REALTIME_SNDBUF_BYTES": str(32 * 1024),
    "MM_SYNC_PAGE_SIZE": "5",
    "MM_MAX_BODY_CHARS": "4000",
    "MM_PRESENCE_TTL_S": "10",
    # A SIGTERM drain waits out pending presence graces; tests need no 5 s default.
    "MM_PRESENCE_GRACE_S": str(20 * TICK),
    "MM_LOG_LEVEL": "WARNING",
}
WAIT = 40 * TICK


def start_node(name: str, **env: str) -> ServiceProcess:
    port = free_port()
    extra = NODE_ENV | {"MM_REALTIME_PORT": str(port), "MM_NODE_ID": f"{name}-{port}"} | env
    return ServiceProcess("realtime", port, extra).start()


@dataclass
class Nodes:
    a: str
    b: str


@dataclass
class Client:
    """A test client: JSON frames out, frames in with a backlog so waits can be selective."""

    ws: ClientConnection
    backlog: list[dict[str, Any]] = field(default_factory=list)
    ready: dict[str, Any] = field(default_factory=dict)
    _rids: Iterator[int] = field(default_factory=itertools.count)

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def send_msg(self, cid: int, body: str, cmid: str | None = None) -> str:
        cmid = cmid or f"m{secrets.token_hex(6)}"
        await self.send(type="send", cid=cid, cmid=cmid, body=body, rid=cmid)
        return cmid

    async def next(self, timeout: float = WAIT) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame: dict[str, Any] = json.loads(raw)
        return frame

    async def expect(self, type_: str, timeout: float = WAIT, **fields: Any) -> dict[str, Any]:
        """The first frame of ``type_`` whose fields match; other frames stay in the backlog."""
        for i, frame in enumerate(self.backlog):
            if frame["type"] == type_ and all(frame.get(k) == v for k, v in fields.items()):
                return self.backlog.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {type_} {fields} in {timeout}s; got {self.backlog[-5:]}")
            try:
                raw = await asyncio.wait_for(self.ws.recv(), remaining)
            except TimeoutError:
                continue
            frame = json.loads(raw)
            if frame["type"] == type_ and all(frame.get(k) == v for k, v in fields.items()):
                return dict(frame)
            self.backlog.append(frame)

    async def quiet(self, type_: str, within: float = 10 * TICK) -> None:
        """Assert no frame of ``type_`` arrives within ``within`` seconds."""
        with pytest.raises(AssertionError):
            frame = await self.expect(type_, timeout=within)
            raise RuntimeError(f"unexpected {frame}")

    async def request(self, **frame: Any) -> dict[str, Any]:
        """Send a frame with a fresh rid and wait for the answer carrying it."""
        rid = f"r{next(self._rids)}"
        await self.send(**frame, rid=rid)
        # Only the socket can hold the answer (the rid is new): other frames wait in the backlog.
        while True:
            answer = json.loads(await asyncio.wait_for(self.ws.recv(), WAIT))
            if answer.get("rid") == rid:
                return dict(answer)
            self.backlog.append(answer)

    async def closed(self, timeout: float = WAIT) -> int:
        """Read until the server closes; return the close code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while loop.time() < deadline:
                await asyncio.wait_for(self.ws.recv(), deadline - loop.time())
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return int(exc.rcvd.code)
        raise AssertionError("socket still open")

    async def close(self) -> None:
        await self.ws.close()


async def open_client(url: str, token: str | None = None, **kwargs: Any) -> Client:
    """Connect (token in the Authorization header when given) without waiting for ``ready``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ws = await connect(url, additional_headers=headers, open_timeout=WAIT, **kwargs)
    return Client(ws)


async def client(url: str, token: str, **kwargs: Any) -> Client:
    """Connect and wait for ``ready``."""
    c = await open_client(url, token, **kwargs)
    c.ready = await c.expect("ready")
    return c


async def sync_all(c: Client, convs: dict[int, int], *, all_: bool = False) -> list[dict[str, Any]]:
    """Page through ``sync`` until the end marker; return every message in order."""
    positions = dict(convs)
    messages: list[dict[str, Any]] = []
    for _page in range(100):
        page = await c.request(
            type="sync", convs={str(k): v for k, v in positions.items()}, all=all_
        )
        assert page["type"] == "sync", page
        for m in page["msgs"]:
            positions[m["cid"]] = max(positions.get(m["cid"], 0), m["seq"])
        messages.extend(page["msgs"])
        if page["end"]:
            return messages
    raise AssertionError("sync never ended")
