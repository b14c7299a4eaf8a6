"""The realtime node's composition root: builds the server from settings and runs it.

Minimal for now: a `websockets` server on uvloop that answers ``/healthz`` through the handshake
hook and stops cleanly on SIGTERM/SIGINT. The realtime issues fill in protocol, hub, broker,
presence and persistence behind this root.
"""

from __future__ import annotations

import asyncio
import http
import logging
import signal

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from common.logs import setup_logging
from common.settings import Settings

log = logging.getLogger("realtime.server")


def _plain(status: http.HTTPStatus, body: str) -> Response:
    payload = body.encode()
    headers = Headers(
        {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(payload))}
    )
    return Response(status.value, status.phrase, headers, payload)


def process_request(connection: ServerConnection, request: Request) -> Response | None:
    """Answer plain HTTP routes before the WebSocket handshake."""
    if request.path == "/healthz":
        return _plain(http.HTTPStatus.OK, "ok\n")
    return None


async def handle(connection: ServerConnection) -> None:
    await connection.close(1011, "not implemented")


async def run(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting and close connections."""
    setup_logging(settings.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        handle,
        settings.realtime_host,
        settings.realtime_port,
        process_request=process_request,
        max_size=settings.max_frame_bytes,
        compression="deflate" if settings.ws_compression else None,
    ):
        log.info(
            "listening", extra={"host": settings.realtime_host, "port": settings.realtime_port}
        )
        await stop.wait()
        log.info("stopping")
