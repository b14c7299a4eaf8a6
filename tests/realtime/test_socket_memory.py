"""A closed socket is freed by reference counting, not left for the cyclic collector.

A node defers its full collections (:mod:`realtime.gcpolicy`), and an idle socket lives long
enough to reach the oldest generation: a reference cycle left by a closed socket then waits
for a full collection, which at the soak's 10 reconnects a second grew the node's RSS by
~0.75 MB a minute for as long as the run lasted (docs/BENCHMARKS.md, *The bounded soak*).

The node is built in this process the one way the server builds it
(:meth:`realtime.server.Services.build`, real PostgreSQL and Redis, a real port), so the test
can watch the closed socket's objects with weak references while the collector is off: every
one must be gone once the socket's clean-up has run, by reference counting alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from common.settings import Settings
from realtime import server
from tests.realtime.conftest import WAIT, client
from tests.support import TICK, free_port


@pytest.fixture
async def in_process(settings: Settings) -> AsyncIterator[tuple[server.Services, str]]:
    services = await server.Services.build(settings)
    port = free_port()
    await services.server.start("127.0.0.1", port, reuse_port=False, backlog=64)
    services.start()
    try:
        yield services, f"ws://127.0.0.1:{port}/"
    finally:
        await services.stop(timeout_s=WAIT, grace_s=0)


def _watch(services: server.Services, known: set[int]) -> list[weakref.ref[Any]]:
    """Weak references to the newest socket's transport-side objects and its handler."""
    [sock] = [s for s in services.server.sockets if id(s) not in known]
    known.add(id(sock))
    assert sock.handler is not None
    return [weakref.ref(sock), weakref.ref(sock.protocol), weakref.ref(sock.handler)]


async def _settled(services: server.Services) -> None:
    """Wait until no socket, connection or hub entry is left on the node."""
    for _ in range(int(WAIT / TICK)):
        node = services.node
        if not services.server.sockets and not node.connections and not list(node.hub.users()):
            return
        await asyncio.sleep(TICK)
    raise AssertionError("the node still holds closed sockets")


def _cyclic_garbage() -> Counter[str]:
    """The types of what a full collection would free now (for the failure message)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return Counter(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)


async def test_closed_sockets_are_freed_without_the_cyclic_collector(
    in_process: tuple[server.Services, str],
    new_user: Callable[..., Any],
    make_token: Callable[..., str],
) -> None:
    services, url = in_process
    tokens = [make_token(await new_user()) for _ in range(3)]
    refs: list[weakref.ref[Any]] = []
    known: set[int] = set()
    gc.collect()
    gc.disable()
    try:
        # The three ways a socket ends: the client's closing handshake, the server's (a
        # drain closes this way), and the TCP connection dropped with no handshake.
        first = await client(url, tokens[0])
        refs += _watch(services, known)
        await first.close()

        second = await client(url, tokens[1])
        refs += _watch(services, known)
        services.node.close_all(4000, "test")
        await second.closed()

        third = await client(url, tokens[2])
        refs += _watch(services, known)
        transport = third.ws.transport
        transport.abort()
        with contextlib.suppress(Exception):
            await third.closed()
        del first, second, third, transport

        await _settled(services)
        await asyncio.sleep(5 * TICK)  # the loop's own references to the last callbacks
        alive = [type(obj).__qualname__ for ref in refs if (obj := ref()) is not None]
        garbage = _cyclic_garbage() if alive else Counter()
        assert alive == [], f"kept alive by reference cycles: {garbage.most_common(20)}"
    finally:
        gc.enable()
