"""One WebSocket on a uvloop ``asyncio.Protocol``, driven through the library's sans-I/O core.

Owns one TCP connection: it feeds received bytes to ``websockets.server.ServerProtocol`` and
writes what that returns (``data_to_send``), answers the opening handshake (the HTTP hook serves
``/healthz`` & co. and the Origin check; everything else is the library's ``accept``), hands
every complete text message to its :class:`Handler` synchronously, frames outgoing text, sends
keepalive pings, and closes with the closing handshake under a timeout. There is no reader task
and no future per frame: the cost of a frame is the library's parser plus one call.

Writes never await. Every text frame queued for this socket in one loop tick leaves in a single
``transport.write`` (an unmasked server text frame is a 2-10 byte header before the payload); with
an extension negotiated (permessage-deflate) frames go through ``ServerProtocol.send_text``. The
server's :class:`FlushQueue` runs one loop callback per tick for every socket that queued.

It decides nothing about what a message means (the handler does) and never closes for a slow
reader by itself (:meth:`WsSocket.pending` is what the handler's high-water check reads).
"""

from __future__ import annotations

import asyncio
import http
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, cast

from websockets.frames import BINARY, CONT, PONG, TEXT, CloseCode, Frame
from websockets.http11 import Request, Response
from websockets.protocol import CONNECTING, OPEN
from websockets.server import ServerProtocol
from websockets.typing import BytesLike

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C extension ships in the wheels
    from websockets.utils import apply_mask

log = logging.getLogger("realtime.transport")

#: Headers of unmasked, unfragmented server text frames (RFC 6455 section 5.2) by length class.
_SHORT = [bytes((0x81, n)) for n in range(126)]
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frame(data: bytes) -> bytes:
    """The header of a server text frame carrying ``data`` (server frames are not masked)."""
    n = len(data)
    if n < 126:
        return _SHORT[n]
    if n < 65536:
        return _MEDIUM.pack(0x81, 126, n)
    return _LONG.pack(0x81, 127, n)


def release(protocol: ServerProtocol) -> None:
    """Break the reference cycles a finished ``ServerProtocol`` keeps, so reference counting
    frees it with its socket.

    Its parser is a generator suspended on its last ``yield`` whose frame holds the protocol,
    and the exception that ended a parse (``parser_exc``) holds the parser's frames in its
    traceback. Left alone, every closed socket is cyclic garbage; an idle socket has lived long
    enough to be in the oldest generation, which the node collects rarely
    (:mod:`realtime.gcpolicy`), so at 10 reconnects a second the node's RSS grew ~0.75 MB a
    minute until a full collection (docs/BENCHMARKS.md, *The bounded soak*). Call it once the
    protocol has received EOF: it parses nothing more.
    """
    protocol.parser.close()
    if protocol.parser_exc is not None:
        protocol.parser_exc.__traceback__ = None


class Handler(Protocol):
    """What a socket drives once its handshake succeeded (a ``realtime.connection.Connection``)."""

    def on_text(self, data: str) -> None:
        """A complete text message (valid UTF-8)."""

    def on_binary(self) -> None:
        """A complete binary message (its content is not needed)."""

    def close(self, code: int, reason: str) -> None:
        """Close from the server side (drain, shutdown)."""

    def on_closed(self) -> Coroutine[Any, Any, None] | None:
        """The TCP connection is gone; a returned coroutine (clean-up) is awaited by the server."""


#: The HTTP hook: a response ends the request there (ops routes, refused Origin); None upgrades.
ProcessRequest = Callable[[object, Request], Response | Awaitable[Response | None] | None]


class Host(Protocol):
    """What a socket needs of its server."""

    def process_request(
        self, sock: WsSocket, request: Request
    ) -> Response | Awaitable[Response | None] | None: ...

    def is_serving(self) -> bool: ...

    def opened(self, sock: WsSocket) -> Handler: ...

    def gone(self, sock: WsSocket, cleanup: Coroutine[Any, Any, None] | None) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...

    def flush_soon(self, sock: WsSocket) -> None: ...


class FlushQueue:
    """The sockets that queued frames this tick, written by one loop callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[WsSocket] = []

    def add(self, sock: WsSocket) -> None:
        if not self._dirty:
            self._loop.call_soon(self._run)
        self._dirty.append(sock)

    def _run(self) -> None:
        dirty, self._dirty = self._dirty, []
        for sock in dirty:
            sock.flush()


class WsSocket(asyncio.Protocol):
    """One connection: handshake, frames in and out, pings, the closing handshake."""

    def __init__(
        self,
        host: Host,
        protocol: ServerProtocol,
        *,
        ping_interval_s: float | None,
        ping_timeout_s: float | None,
        open_timeout_s: float,
        close_timeout_s: float,
    ) -> None:
        self.host, self.protocol = host, protocol
        self.ping_interval_s, self.ping_timeout_s = ping_interval_s, ping_timeout_s
        self.open_timeout_s, self.close_timeout_s = open_timeout_s, close_timeout_s
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None
        self.handler: Handler | None = None
        #: No extension negotiated: frames are framed here rather than by the library.
        self.plain = True
        #: Incoming text frames may be parsed here (:meth:`_fast_frames`): open, plain, and no
        #: fragmented message under way.
        self.fast = False
        limit = protocol.max_message_size
        self.max_size: int = (1 << 62) if limit is None else limit
        self._queue: list[bytes] = []
        self._queued = 0
        self._fragments: list[BytesLike] | None = None
        self._fragments_text = False
        self._early: list[Frame] = []
        self._timer: asyncio.TimerHandle | None = None  # open, ping, pong or close deadline
        self._ping: bytes | None = None
        self._ping_sent = 0.0
        self._closing_timer = False

    # -- what the handler uses ---------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.protocol.state is OPEN

    @property
    def close_code(self) -> int | None:
        return self.protocol.close_code

    def pending(self) -> int:
        """Bytes not yet on the wire: the transport's buffer plus what this tick queued."""
        transport = self.transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        return buffered + self._queued

    def send_text(self, data: bytes) -> None:
        """Queue one UTF-8 payload as a text frame for this tick's single write; never awaits."""
        if not self._queue:
            self.host.flush_soon(self)
        self._queue.append(data)
        self._queued += len(data)

    def drop_queued(self) -> None:
        self._queue, self._queued = [], 0

    def flush(self) -> None:
        """Write what this tick queued: whole frames, in order, while the socket is OPEN."""
        queue, self._queue, self._queued = self._queue, [], 0
        if not queue or self.protocol.state is not OPEN or self.transport is None:
            return
        try:
            if self.plain:
                parts: list[bytes] = []
                for data in queue:
                    parts.append(text_frame(data))
                    parts.append(data)
                self.transport.write(b"".join(parts))
            else:
                for data in queue:
                    self.protocol.send_text(data)
                self._send_data()
        except Exception as exc:  # a failed write is connection_lost's business
            log.warning("write failed", extra={"error": type(exc).__name__})

    def set_send_buffer(self, size: int) -> None:
        """Pin the kernel send buffer (so a slow reader reaches the high-water mark)."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake (frames queued before it go first); idempotent."""
        if self.protocol.state is not OPEN:
            return
        self.flush()
        self.protocol.send_close(code, reason)
        self._send_data()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._arm(self.open_timeout_s, self._open_timed_out)

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        if self.fast and not protocol.reader.buffer:
            data = self._fast_frames(data)
            if not data:
                return
        protocol.receive_data(data)
        events = protocol.events_received()
        self._send_data()  # pongs, the echo of a close, a refused request
        for event in events:
            if isinstance(event, Frame):
                self._on_frame(event)
            else:
                assert isinstance(event, Request)
                self._on_request(event)

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._send_data()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()
        release(self.protocol)
        self.fast = False
        self._cancel_timer()
        self._queue, self._queued = [], 0
        handler, self.handler = self.handler, None
        cleanup = handler.on_closed() if handler is not None else None
        self.host.gone(self, cleanup)

    # -- frames ------------------------------------------------------------------------------

    def _fast_frames(self, data: bytes) -> bytes:
        """Take the leading whole, unfragmented, masked text frames of ``data``; return the rest.

        The common frame needs none of the library's parser (a generator, a ``Frame`` and an
        ``Opcode`` per frame): with no extension, no fragmented message under way and nothing
        buffered in the parser, a ``0x81`` header with the mask bit and a payload under
        ``max_size`` is unmasked here. Anything else (control frames, fragments, a frame cut by
        the read, a bad header, an oversized one) and everything after it goes to
        ``ServerProtocol``, which then sees the stream from a frame boundary.
        """
        pos, end_of_data, max_size = 0, len(data), self.max_size
        protocol = self.protocol
        while self.fast and protocol.state is OPEN and end_of_data - pos >= 6:
            if data[pos] != 0x81:
                break
            length = data[pos + 1] ^ 0x80  # the mask bit must be set: other values fall back
            if length < 126:
                start = pos + 6
            elif length == 126 and end_of_data - pos >= 8:
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 8
            else:
                break
            end = start + length
            if length > max_size or end > end_of_data:
                break
            payload = apply_mask(data[start:end], data[start - 4 : start])
            pos = end
            self._message(True, payload)
        return data[pos:] if pos else data

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is TEXT or opcode is BINARY:
            if frame.fin:
                self._message(opcode is TEXT, frame.data)
            else:
                self._fragments, self._fragments_text = [frame.data], opcode is TEXT
                self.fast = False
        elif opcode is CONT:
            if self._fragments is not None:
                self._fragments.append(frame.data)
                if frame.fin:
                    data = b"".join(self._fragments)
                    self._fragments = None
                    self.fast = self.plain
                    self._message(self._fragments_text, data)
        elif opcode is PONG and frame.data == self._ping and not self._closing_timer:
            self._pong()

    def _pong(self) -> None:
        """The keepalive ping was answered: the next one after the interval, less the latency."""
        self._ping = None
        latency = self.loop.time() - self._ping_sent
        interval = self.ping_interval_s or 0.0
        self._arm(max(interval - latency, 0.0), self._send_ping)

    def _message(self, text: bool, data: BytesLike) -> None:
        handler = self.handler
        if handler is None:
            # Frames before the handler exists (pipelined behind the handshake request).
            self._early.append(Frame(TEXT if text else BINARY, data))
            return
        if not text:
            handler.on_binary()
            return
        try:
            message = str(data, "utf-8")
        except UnicodeDecodeError as exc:
            self.protocol.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
            self._send_data()
            return
        handler.on_text(message)

    # -- the opening handshake ---------------------------------------------------------------

    def _on_request(self, request: Request) -> None:
        self.request = request
        try:
            response = self.host.process_request(self, request)
        except Exception:
            log.error("process_request failed", exc_info=True)
            response = self._internal_error()
        if isinstance(response, Awaitable):
            self.host.spawn(self._respond_later(request, response))
        else:
            self._respond(request, response)

    async def _respond_later(self, request: Request, pending: Awaitable[Response | None]) -> None:
        try:
            response = await pending
        except Exception:
            log.error("process_request failed", exc_info=True)
            response = self._internal_error()
        self._respond(request, response)

    def _internal_error(self) -> Response:
        return self.protocol.reject(
            http.HTTPStatus.INTERNAL_SERVER_ERROR,
            "Failed to open a WebSocket connection.\nSee server log for more information.\n",
        )

    def _respond(self, request: Request, response: Response | None) -> None:
        protocol = self.protocol
        if protocol.state is not CONNECTING or self.transport is None:
            return  # the peer left during the handshake
        if response is None:
            response = protocol.accept(request)
        if response.status_code == 101 and not self.host.is_serving():
            unavailable = http.HTTPStatus.SERVICE_UNAVAILABLE
            response = protocol.reject(unavailable, "Server is shutting down.\n")
        protocol.send_response(response)
        self._send_data()
        if protocol.state is not OPEN:
            return  # an HTTP answer: the EOF went out with it, the close timer runs
        self._cancel_timer()
        self.plain = self.fast = not protocol.extensions
        self.handler = handler = self.host.opened(self)
        if self.ping_interval_s is not None:
            self._arm(self.ping_interval_s, self._send_ping)
        early, self._early = self._early, []
        for frame in early:
            if self.handler is not handler:
                break
            self._message(frame.opcode is TEXT, frame.data)

    # -- writing the library's output, timers ------------------------------------------------

    def _send_data(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                try:
                    transport.write_eof()
                except OSError:
                    transport.close()
            else:
                transport.close()
        if self.protocol.close_expected():
            self._arm_close()

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm_close(self) -> None:
        """The peer should close the TCP connection soon; abort it if it does not."""
        if not self._closing_timer:
            self._closing_timer = True
            self._arm(self.close_timeout_s, self._abort)

    def _abort(self) -> None:
        self._timer = None
        if self.transport is not None:
            self.transport.abort()

    def _open_timed_out(self) -> None:
        self._timer = None
        if self.protocol.state is CONNECTING:
            self._abort()

    def _send_ping(self) -> None:
        self._timer = None
        if self.protocol.state is not OPEN:
            return
        self._ping = os.urandom(4)
        self._ping_sent = self.loop.time()
        self.protocol.send_ping(self._ping)
        self._send_data()
        if self.ping_timeout_s is not None:
            self._arm(self.ping_timeout_s, self._pong_timed_out)

    def _pong_timed_out(self) -> None:
        self._timer = None
        if self.protocol.state is OPEN and self._ping is not None:
            self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._send_data()
