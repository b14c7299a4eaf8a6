"""The coalescer's own logic (realtime/coalesce.py) on an event loop with a recording ``fetch``:
no PostgreSQL, no Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from realtime.coalesce import Coalescer, CoalescerClosed
from tests.support import TICK


class Recorder:
    """A ``fetch`` that records each call's keys and answers ``key * 10`` once released."""

    def __init__(self, *, missing: frozenset[int] = frozenset()) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0
        self.release = asyncio.Event()
        self.release.set()
        self.missing = missing
        self.fail_with: Exception | None = None

    async def __call__(self, keys: list[int]) -> Mapping[int, int]:
        self.batches.append(list(keys))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
            if self.fail_with is not None:
                raise self.fail_with
            return {key: key * 10 for key in keys if key not in self.missing}
        finally:
            self.running -= 1


async def test_keys_asked_in_one_iteration_share_one_call_and_each_gets_its_own_value() -> None:
    fetch = Recorder()
    coalescer = Coalescer(fetch, max_batch=100, max_in_flight=2)
    values = await asyncio.gather(*(coalescer.get(k) for k in (3, 1, 2, 1, 3)))
    assert values == [30, 10, 20, 10, 30]
    assert fetch.batches == [[3, 1, 2]]  # distinct, in arrival order
    assert (coalescer.calls, coalescer.keys) == (1, 3)


async def test_a_burst_is_split_into_batches_and_never_exceeds_the_calls_in_flight() -> None:
    fetch = Recorder()
    fetch.release.clear()
    coalescer = Coalescer(fetch, max_batch=4, max_in_flight=2)
    waiters = [asyncio.ensure_future(coalescer.get(k)) for k in range(10)]
    await asyncio.sleep(TICK)
    # Two calls run; the other keys wait in line rather than open a third.
    assert fetch.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert (coalescer.in_flight, coalescer.waiting) == (2, 2)
    fetch.release.set()
    assert await asyncio.gather(*waiters) == [k * 10 for k in range(10)]
    assert fetch.batches[2] == [8, 9]
    assert fetch.most_running == 2


async def test_a_key_asked_while_its_call_is_in_flight_waits_for_a_new_call() -> None:
    fetch = Recorder()
    fetch.release.clear()
    coalescer = Coalescer(fetch, max_batch=10, max_in_flight=4)
    first = asyncio.ensure_future(coalescer.get(7))
    await asyncio.sleep(TICK)
    second = asyncio.ensure_future(coalescer.get(7))
    await asyncio.sleep(TICK)
    # The second asker may have read an epoch after the first call started: it gets its own.
    assert fetch.batches == [[7], [7]]
    fetch.release.set()
    assert (await first, await second) == (70, 70)


async def test_a_failed_call_fails_its_waiters_only() -> None:
    fetch = Recorder()
    coalescer = Coalescer(fetch, max_batch=10, max_in_flight=1)
    fetch.fail_with = OSError("down")
    with pytest.raises(OSError, match="down"):
        await coalescer.get(1)
    fetch.fail_with = None
    assert await coalescer.get(1) == 10


async def test_a_failed_call_also_fails_the_keys_waiting_in_line() -> None:
    fetch = Recorder()
    fetch.release.clear()
    fetch.fail_with = TimeoutError()
    coalescer = Coalescer(fetch, max_batch=2, max_in_flight=1)
    waiters = [asyncio.ensure_future(coalescer.get(k)) for k in range(5)]
    await asyncio.sleep(TICK)
    assert (coalescer.in_flight, coalescer.waiting) == (1, 3)
    fetch.release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    # One timeout for the whole line, not one per batch behind it.
    assert all(isinstance(r, TimeoutError) for r in results), results
    assert fetch.batches == [[0, 1]]


async def test_a_key_missing_from_the_answer_raises_key_error() -> None:
    coalescer = Coalescer(Recorder(missing=frozenset({2})), max_batch=10, max_in_flight=1)
    asks = (coalescer.get(1), coalescer.get(2))
    found, missing = await asyncio.gather(*asks, return_exceptions=True)
    assert found == 10
    assert isinstance(missing, KeyError)


async def test_a_waiter_that_gives_up_leaves_the_others_their_answer() -> None:
    fetch = Recorder()
    fetch.release.clear()
    coalescer = Coalescer(fetch, max_batch=10, max_in_flight=1)
    quitter = asyncio.ensure_future(coalescer.get(5))
    stayer = asyncio.ensure_future(coalescer.get(5))
    await asyncio.sleep(TICK)
    quitter.cancel()
    fetch.release.set()
    assert await stayer == 50
    assert quitter.cancelled()


async def test_close_fails_queued_and_running_keys_and_refuses_new_ones() -> None:
    fetch = Recorder()
    fetch.release.clear()
    coalescer = Coalescer(fetch, max_batch=1, max_in_flight=1)
    running = asyncio.ensure_future(coalescer.get(1))
    queued = asyncio.ensure_future(coalescer.get(2))
    await asyncio.sleep(TICK)
    assert (coalescer.in_flight, coalescer.waiting) == (1, 1)
    await coalescer.close()
    for waiter in (running, queued):
        with pytest.raises(CoalescerClosed):
            await waiter
    with pytest.raises(CoalescerClosed):
        await coalescer.get(3)
    assert coalescer.in_flight == 0


def test_sizes_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Recorder(), max_batch=0, max_in_flight=1)
