"""Ending background tasks: the one way every ``close()`` cancels its loops and waits for them.

Owns :func:`cancel_and_wait`. It must not start tasks or know what they do.

Why not ``task.cancel()`` then ``await task`` under ``suppress(CancelledError)``, as each module
did: a task can swallow its cancellation and go on looping (Python 3.11's ``asyncio.wait_for``
does when the cancel arrives just as the call it awaits completes; the broker's heartbeat hung a
close that way on the Redis Cluster), and that ``await`` then waits forever. And the
``suppress`` also swallowed a cancellation of the caller itself, so a bounded shutdown
(``wait_for(close(), ...)``) could not end a close that hung.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

#: How long a cancelled task has to end before it is cancelled again.
RECANCEL_S: Final = 0.05


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel every task (``None`` is skipped) and return once all have ended.

    A task still running ``RECANCEL_S`` after its cancel is cancelled again, until it ends. A
    task that ended with an exception other than its cancellation has it raised here, once all
    have ended (the first such one, in argument order). A cancellation of the caller is not
    swallowed: it propagates, leaving the tasks cancelled but maybe not yet ended.
    """
    given = [task for task in tasks if task is not None]
    pending = set(given)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
    for task in given:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
