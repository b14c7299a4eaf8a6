"""The node's garbage-collector policy: keep the startup heap out of collections, run the full
collection rarely, and time every pause.

A node holds many long-lived objects per socket (the websockets connection, its protocol,
parser and tasks), and CPython's full collection walks all of them while the event loop stands
still. Opening 10,000 sockets on one node, with the default thresholds, ran 8-9 full
collections of up to 700 ms (2.3-3.2 s in all, measured with ``gc.callbacks``;
docs/BENCHMARKS.md): a reconnect storm after a deploy stalled every socket of the node for
over half a second at a time. With this policy: one full collection (460-610 ms).

- :func:`tune`, once the node serves: one collection, then ``gc.freeze()`` moves the ~60,000
  objects of the imported modules and the built services to the permanent generation (a full
  collection of them alone took 14.8 ms), and the oldest generation is considered after 100
  middle-generation collections instead of 10 (the young generations keep CPython's defaults,
  so short-lived garbage goes as fast as before). Cyclic garbage that reaches the oldest
  generation waits longer; everything else is freed by reference counting as always.
- :func:`install_pause_timer` observes every collection's duration, by generation, into the
  node's metrics (``mm_rt_gc_pause_seconds``), so operators see the stalls the policy bounds.

It must not decide anything about sockets or messages; it only sets the collector's knobs.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Final

from realtime.metrics import TALLY, Tally

#: CPython's defaults are (700, 10, 10): only the oldest generation's trigger changes.
THRESHOLDS: Final = (700, 10, 100)


def tune() -> int:
    """Freeze what exists now and set :data:`THRESHOLDS`; returns the objects frozen."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return gc.get_freeze_count()


class PauseTimer:
    """A ``gc.callbacks`` entry: each collection's duration into ``tally.gc_pause``."""

    __slots__ = ("started", "tally")

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.tally.gc_pause[info["generation"]].observe(time.perf_counter() - self.started)


def install_pause_timer(tally: Tally = TALLY) -> PauseTimer:
    """Time every collection from now on (once per process: a second call reuses the first)."""
    for callback in gc.callbacks:
        if isinstance(callback, PauseTimer) and callback.tally is tally:
            return callback
    timer = PauseTimer(tally)
    gc.callbacks.append(timer)
    return timer
