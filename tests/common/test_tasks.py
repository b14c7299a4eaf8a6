"""``cancel_and_wait``: every task ends, even one that swallows its cancel; errors surface."""

from __future__ import annotations

import asyncio

import pytest

from common.tasks import cancel_and_wait
from tests.support import TICK


async def _loop(ticks: list[int]) -> None:
    while True:
        ticks.append(1)
        await asyncio.sleep(TICK / 10)


async def _stubborn(cancels: list[int]) -> None:
    """Swallows its first cancellation and goes on looping, as a raced ``wait_for`` can."""
    while True:
        try:
            await asyncio.sleep(TICK / 10)
        except asyncio.CancelledError:
            cancels.append(1)
            if len(cancels) > 1:
                raise


async def test_every_task_ends_and_none_is_skipped() -> None:
    ticks: list[int] = []
    tasks = [asyncio.create_task(_loop(ticks)) for _ in range(3)]
    await asyncio.sleep(TICK / 5)
    await cancel_and_wait(tasks[0], None, *tasks[1:])
    assert all(task.cancelled() for task in tasks)
    assert ticks


async def test_a_task_that_swallows_its_cancel_is_cancelled_again() -> None:
    cancels: list[int] = []
    task = asyncio.create_task(_stubborn(cancels))
    await asyncio.sleep(TICK / 5)
    await asyncio.wait_for(cancel_and_wait(task), 20 * TICK)
    assert task.cancelled() and len(cancels) == 2


async def test_an_error_a_task_ended_with_is_raised_once_all_have_ended() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    ticks: list[int] = []
    broken, looping = asyncio.create_task(fails()), asyncio.create_task(_loop(ticks))
    await asyncio.sleep(TICK / 5)
    with pytest.raises(ValueError, match="broken"):
        await cancel_and_wait(broken, looping)
    assert looping.cancelled()


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    cancels: list[int] = []
    stubborn = asyncio.create_task(_stubborn(cancels))
    await asyncio.sleep(TICK / 5)
    closing = asyncio.create_task(cancel_and_wait(stubborn))
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    # Its next close ends it (the first close's cancel was its one swallowed cancel).
    await asyncio.wait_for(cancel_and_wait(stubborn), 20 * TICK)
    assert stubborn.cancelled()
