"""Many concurrent reads of one key each, answered by one read of many keys: the connect path's
coalescer (one PostgreSQL statement or one Redis MGET for every socket authenticating at once).

Owns the waiting line and the batches: :meth:`Coalescer.get` queues a key and awaits its value;
on the next loop iteration the keys queued meanwhile (distinct, in arrival order, at most
``max_batch``) go to ``fetch`` as one call, with at most ``max_in_flight`` calls running, so a
reconnect storm waits in line for its turn instead of timing out on a pool acquire. A key is
only ever answered by a call that started after it was queued (a key queued while its call is in
flight waits for the next one), so a caller that reads a version or an epoch before
:meth:`get` sees a value read after it. ``fetch``'s exception goes to every waiter of that
call and to the keys waiting in line then (during an outage a storm hears it after one
timeout, not one timeout per batch), a key missing from its answer raises :class:`KeyError`
in its waiters, and :meth:`Coalescer.close` fails the rest with :class:`CoalescerClosed`. It
knows nothing of what is read; it never retries (callers decide) and never caches across calls.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Generic, TypeVar

from common.tasks import cancel_and_wait

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Fetch = Callable[[list[K]], Awaitable[Mapping[K, V]]]


class CoalescerClosed(Exception):
    """The coalescer was closed (the node is stopping) before the key's call answered."""


class Coalescer(Generic[K, V]):
    """One ``fetch`` call per batch of keys asked for at about the same moment."""

    def __init__(self, fetch: Fetch[K, V], *, max_batch: int, max_in_flight: int) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self.fetch, self.max_batch, self.max_in_flight = fetch, max_batch, max_in_flight
        #: Keys not yet handed to a call, oldest first, each with the futures awaiting it.
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._calls: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._closed = False
        #: Calls made and keys they carried (the node's connect figures).
        self.calls = 0
        self.keys = 0

    @property
    def waiting(self) -> int:
        """Distinct keys queued and not yet in a call."""
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    async def get(self, key: K) -> V:
        """The value of ``key`` from a call that starts after this one queued it."""
        if self._closed:
            raise CoalescerClosed()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        self._waiting.setdefault(key, []).append(future)
        if not self._scheduled:
            # On the next iteration: every socket whose auth step runs in this one joins.
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return await future

    def _dispatch(self) -> None:
        self._scheduled = False
        while self._waiting and len(self._calls) < self.max_in_flight and not self._closed:
            keys = list(itertools.islice(self._waiting, self.max_batch))
            batch = {key: self._waiting.pop(key) for key in keys}
            task = asyncio.get_running_loop().create_task(self._call(batch))
            self._calls.add(task)
            task.add_done_callback(self._call_done)

    async def _call(self, batch: dict[K, list[asyncio.Future[V]]]) -> None:
        self.calls += 1
        self.keys += len(batch)
        try:
            found = await self.fetch(list(batch))
        except asyncio.CancelledError:
            _fail(batch, CoalescerClosed())
            raise
        except Exception as exc:
            # Every waiter of this call hears it, and so does the line: their calls would meet
            # the same outage one timeout after another, so they hear it now.
            _fail(batch, exc)
            _fail(self._waiting, exc)
            self._waiting.clear()
            return
        for key, futures in batch.items():
            for future in futures:
                if future.done():
                    continue  # its waiter gave up (closed socket, auth timeout)
                if key in found:
                    future.set_result(found[key])
                else:
                    future.set_exception(KeyError(key))

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self._calls.discard(task)
        if self._waiting and not self._closed:
            self._dispatch()

    async def close(self) -> None:
        """Refuse new keys, fail the queued ones, cancel and await the calls in flight."""
        self._closed = True
        _fail(self._waiting, CoalescerClosed())
        self._waiting.clear()
        await cancel_and_wait(*self._calls)


def _fail(batch: Mapping[K, list[asyncio.Future[V]]], exc: BaseException) -> None:
    for futures in batch.values():
        for future in futures:
            if not future.done():
                future.set_exception(exc)
