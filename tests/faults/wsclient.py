"""A recording WebSocket client for the fault tests that drive sockets by hand.

Every frame received is kept with its arrival time, in order, so a test can ask what came
before or after a given frame on the same socket (frames on one socket are ordered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support import TICK


class Recorder:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.ready: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    @classmethod
    async def open(cls, url: str, token: str, **kwargs: Any) -> Recorder:
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=40 * TICK,
            **kwargs,
        )
        rec = cls(ws)
        rec.ready = json.loads(await asyncio.wait_for(ws.recv(), 40 * TICK))
        assert rec.ready["type"] == "ready", rec.ready
        rec._task = asyncio.create_task(rec._read())
        return rec

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                self.frames.append((time.monotonic(), json.loads(raw)))
                self._arrived.set()

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    def of(self, type_: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            f
            for _, f in self.frames
            if f["type"] == type_ and all(f.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(
        self, type_: str, count: int = 1, timeout: float = 100 * TICK, **fields: Any
    ) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(found := self.of(type_, **fields)) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return found

    async def close(self) -> None:
        await self.ws.close()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 40 * TICK)
