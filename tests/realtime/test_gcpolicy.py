"""The node's collector policy (pure process state: no servers needed)."""

from __future__ import annotations

import gc

from realtime import gcpolicy
from realtime.metrics import Tally


def test_tune_freezes_the_heap_and_raises_only_the_oldest_trigger() -> None:
    before = gc.get_threshold()
    try:
        frozen = gcpolicy.tune()
        assert frozen == gc.get_freeze_count() > 1000  # at least the imported modules
        assert gc.get_threshold() == gcpolicy.THRESHOLDS
        assert gcpolicy.THRESHOLDS[:2] == before[:2]  # the young generations keep their triggers
        assert gcpolicy.THRESHOLDS[2] > before[2]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_pause_timer_observes_each_collection_by_generation() -> None:
    tally = Tally()
    timer = gcpolicy.install_pause_timer(tally)
    try:
        assert gcpolicy.install_pause_timer(tally) is timer  # installed once
        gc.collect(0)
        gc.collect(2)
        assert tally.gc_pause[0].count >= 1
        assert tally.gc_pause[2].count >= 1
        assert tally.gc_pause[2].total > 0
    finally:
        gc.callbacks.remove(timer)
