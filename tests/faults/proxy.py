"""An asyncio TCP fault proxy on loopback (toxiproxy and ``tc netem`` are not available here).

Sits between WebSocket clients and a realtime node (or, with ``websocket=False``, between a
node and any TCP server: Redis) and forwards bytes both ways until told to misbehave:

- :meth:`FaultProxy.cut_next_upstream`: the next client chunk is forwarded only half, then both
  sides of that link are aborted (a connection cut in the middle of a frame);
- :attr:`FaultProxy.swallow_acks`: that many ``ack`` frames from the node are dropped on their
  way to the client (the node believes it answered; the client never hears);
- :meth:`FaultProxy.cut_off` / :meth:`FaultProxy.restore`: every link aborted and every new
  connection refused until restored (a client cut off from its server).

Server-to-client WebSocket frames are unmasked and uncompressed (compression is off), so the
proxy parses their headers to drop whole frames; a raw proxy copies bytes. It owns its listening
socket and its links, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct


class FaultProxy:
    def __init__(self, target_port: int, *, websocket: bool = True) -> None:
        self.target_port, self.websocket = target_port, websocket
        self.cut = False
        self.port = 0
        self.swallow_acks = 0
        self.swallowed = 0
        self.cuts = 0
        self._cut_next = False
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def cut_next_upstream(self) -> None:
        self._cut_next = True

    def cut_off(self) -> None:
        """Abort every link and refuse new ones until :meth:`restore`."""
        self.cut = True
        for writer in tuple(self._writers):
            writer.transport.abort()

    def restore(self) -> None:
        self.cut = False

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in tuple(self._writers):
            writer.transport.abort()
        for task in tuple(self._links):
            task.cancel()
        for task in tuple(self._links):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        pair = (writer, up_writer)
        tasks = [
            asyncio.create_task(self._upstream(reader, up_writer, pair)),
            asyncio.create_task(
                self._downstream(up_reader, writer) if self.websocket else _copy(up_reader, writer)
            ),
        ]
        self._links.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for w in pair:
                w.transport.abort()
                self._writers.discard(w)
            self._links.difference_update(tasks)

    async def _upstream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        while data := await reader.read(65536):
            if self._cut_next and len(data) > 8:
                self._cut_next = False
                self.cuts += 1
                writer.write(data[: len(data) // 2])
                await writer.drain()
                for w in pair:
                    w.transport.abort()
                return
            writer.write(data)
            await writer.drain()

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The HTTP handshake answer first, untouched.
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        while True:
            frame = await _read_frame(reader)
            if self.swallow_acks and b'"type":"ack"' in frame[:64]:
                self.swallow_acks -= 1
                self.swallowed += 1
                continue
            writer.write(frame)
            await writer.drain()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    """One whole unmasked WebSocket frame (header and payload), as it came."""
    header = await reader.readexactly(2)
    length = header[1] & 0x7F
    extra = b""
    if length == 126:
        extra = await reader.readexactly(2)
        length = struct.unpack("!H", extra)[0]
    elif length == 127:
        extra = await reader.readexactly(8)
        length = struct.unpack("!Q", extra)[0]
    return header + extra + await reader.readexactly(length)
