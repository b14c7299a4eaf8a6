"""Named failpoints for fault tests: kill, delay or raise at a chosen spot of the write path.

Enabled ONLY by the environment, read once when this module is imported::

    MM_FAILPOINTS="after_commit_before_fanout=kill@20,before_commit=delay:0.5"

Each entry is ``name=action[@n]``: the action fires on the ``n``-th hit of that point and every
hit after it (``n`` defaults to 1). Actions: ``kill`` (SIGKILL to this very process, as
``kill -9`` from outside would: no cleanup, no flush, no goodbye), ``delay:<seconds>``
(a blocking sleep: it stalls the whole event loop as a stuck process would) and ``raise``
(:class:`FailpointError`). With the variable unset :func:`hit` is one falsy check and a return.

The points the product calls (see :data:`POINTS`) sit on the path from a send to its ack, where a
crash tests the promises of ``docs/RELIABILITY.md``. This module owns the parsing and the
actions only: it never decides anything for the product, and nothing catches
:class:`FailpointError` on purpose.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Final

#: Where the product calls :func:`hit`, in the order a send passes them.
POINTS: Final = (
    "before_commit",  # realtime/batch.py: the batch decided and about to go to PostgreSQL
    "after_commit_before_fanout",  # realtime/batch.py: committed, neither acked nor fanned out
    "after_fanout_before_ack",  # realtime/node.py: delivered to local sockets/broker, no ack yet
)
ACTIONS: Final = ("kill", "delay", "raise")


class FailpointError(RuntimeError):
    """Raised by a failpoint whose action is ``raise``."""


@dataclass(slots=True)
class Failpoint:
    action: str
    after: int = 1
    delay_s: float = 0.0
    hits: int = 0


def parse(spec: str) -> dict[str, Failpoint]:
    """``name=action[@n]`` entries separated by commas; ValueError on anything else."""
    points: dict[str, Failpoint] = {}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, rest = entry.partition("=")
        if not sep or name not in POINTS:
            raise ValueError(f"unknown failpoint {name!r} (known: {', '.join(POINTS)})")
        action, _, after = rest.partition("@")
        kind, _, argument = action.partition(":")
        if kind not in ACTIONS:
            raise ValueError(f"unknown failpoint action {kind!r} (known: {', '.join(ACTIONS)})")
        point = Failpoint(kind, after=int(after) if after else 1)
        if kind == "delay":
            point.delay_s = float(argument)
        if point.after < 1 or point.delay_s < 0:
            raise ValueError(f"bad failpoint entry {entry!r}")
        points[name] = point
    return points


_points: Final = parse(os.environ.get("MM_FAILPOINTS", ""))


def hit(name: str) -> None:
    """Pass the failpoint ``name``: does nothing unless MM_FAILPOINTS armed it."""
    if not _points:
        return
    point = _points.get(name)
    if point is None:
        return
    point.hits += 1
    if point.hits < point.after:
        return
    if point.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif point.action == "delay":
        time.sleep(point.delay_s)  # blocking on purpose: a stalled process, not a slow await
    else:
        raise FailpointError(name)


def armed() -> dict[str, str]:
    """What is armed (for the start-up log line), ``{name: action}``."""
    return {name: point.action for name, point in _points.items()}
