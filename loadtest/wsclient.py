"""A lean WebSocket client for load generation: asyncio ``Protocol``, RFC 6455 text frames only.

Owns the client side of one socket: the HTTP upgrade (token in the ``Authorization`` header,
optional source address on loopback), masking and framing outgoing text frames, parsing incoming
frames (answering pings, reporting the close code) and handing each text payload to a callback.
It exists because the ``websockets`` asyncio client costs tens of microseconds per frame in
Python, and a load generator that shares one core with PostgreSQL and Redis must spend far less
per message than the server it measures. It knows nothing of any chat protocol (the adapters in
:mod:`loadtest.adapters` do) and never retries or reconnects: the caller decides.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import struct
from collections.abc import Callable
from typing import Final, cast
from urllib.parse import urlsplit

from websockets.speedups import apply_mask

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
#: Close code reported when the TCP connection ends without a close frame.
ABNORMAL: Final = 1006
MAX_HANDSHAKE: Final = 16 * 1024
_ACCEPT_SUFFIX: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(Exception):
    """The server refused the upgrade (``status``) or spoke no HTTP."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(f"handshake failed: {status} {detail}".strip())
        self.status = status


def frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (FIN set)."""
    n = len(payload)
    mask = random.getrandbits(32).to_bytes(4, "big")
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + apply_mask(payload, mask)


OnText = Callable[[bytes], None]
OnClose = Callable[[int], None]


class WsClient(asyncio.Protocol):
    """One client socket. ``on_text`` runs for every text frame; ``on_close`` once, at the end."""

    def __init__(self, on_text: OnText, on_close: OnClose) -> None:
        self.on_text, self.on_close = on_text, on_close
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.close_code: int | None = None
        self._buf = bytearray()
        self._upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._key = base64.b64encode(os.urandom(16))
        self._partial: list[bytes] = []

    # -- connecting --------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        token: str | None,
        on_text: OnText,
        on_close: OnClose,
        source: str | None = None,
        timeout_s: float = 10.0,
    ) -> WsClient:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        loop = asyncio.get_running_loop()
        local = (source, 0) if source else None
        client = cls(on_text, on_close)
        async with asyncio.timeout(timeout_s):
            transport, _ = await loop.create_connection(
                lambda: client, host, port, local_addr=local
            )
            lines = [
                f"GET {parts.path or '/'} HTTP/1.1",
                f"Host: {host}:{port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {client._key.decode()}",
                "Sec-WebSocket-Version: 13",
            ]
            if token:
                lines.append(f"Authorization: Bearer {token}")
            transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            try:
                await client._upgraded
            except BaseException:
                transport.abort()
                raise
        return client

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not a subclass of asyncio.Transport, but has its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self.open and not self._handshake():
            return
        self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self.open
        self.open = False
        if not self._upgraded.done():
            self._upgraded.set_exception(HandshakeError(0, "connection closed"))
        if self.close_code is None:
            self.close_code = ABNORMAL
        if was_open or self._upgraded.done():
            self.on_close(self.close_code)

    # -- sending -----------------------------------------------------------------------------

    def send_text(self, payload: bytes) -> None:
        if self.open and self.transport is not None:
            self.transport.write(frame(OP_TEXT, payload))

    def send_many(self, payloads: list[bytes]) -> None:
        """Several text frames in one write (one syscall for a burst)."""
        if self.open and self.transport is not None and payloads:
            self.transport.write(b"".join(frame(OP_TEXT, p) for p in payloads))

    def close(self, code: int = 1000) -> None:
        if self.open and self.transport is not None:
            self.transport.write(frame(OP_CLOSE, struct.pack("!H", code)))
            self.open = False
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- parsing -----------------------------------------------------------------------------

    def _handshake(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HANDSHAKE:
                self._fail(HandshakeError(0, "oversized response"))
            return False
        head = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[: end + 4]
        status_line = head.split("\r\n", 1)[0].split(" ")
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        if status != 101:
            self._fail(HandshakeError(status, status_line[-1] if status else head[:40]))
            return False
        self.open = True
        self._upgraded.set_result(None)
        return True

    def _fail(self, exc: Exception) -> None:
        if not self._upgraded.done():
            self._upgraded.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def _parse(self) -> None:
        buf = self._buf
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, head = b1 & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if b1 & 0x80:  # servers never mask; treat as a protocol error
                self._protocol_error()
                return
            if size - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            self._frame(b0 & 0x80 != 0, b0 & 0x0F, payload)
            if self.transport is None or self.transport.is_closing():
                break
        del buf[:pos]

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT or (opcode == OP_CONT and self._partial):
            if not fin:
                self._partial.append(payload)
                return
            if self._partial:
                payload = b"".join([*self._partial, payload])
                self._partial = []
            self.on_text(payload)
        elif opcode == OP_PING:
            if self.open and self.transport is not None:
                self.transport.write(frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if self.open and self.transport is not None:
                self.transport.write(frame(OP_CLOSE, payload[:2]))
                self.open = False
                self.transport.close()
        elif opcode == OP_PONG:
            return
        else:
            self._protocol_error()

    def _protocol_error(self) -> None:
        self.close_code = 1002
        self.close(1002)
