"""The node's metrics: plain counters the hot path bumps, exported through prometheus-client.

Owns :data:`TALLY` (one per process, and a process is one node) and the node's own
:class:`~prometheus_client.CollectorRegistry`. The hot path never calls prometheus-client: a
frame costs one ``dict[key] += 1`` on a pre-filled dict (no label lookup, no lock; a node is one
event-loop thread), a latency one :func:`bisect.bisect_left` and two adds. Everything else (open
sockets, queue depths, broker counters, delivery lag) is read from the parts at scrape time by
:class:`NodeCollector`. Redis and PostgreSQL failures are counted from the warnings their
adapters already log (:class:`FailureCounter`), so no adapter imports this module.

It must not do I/O or decide anything: it only counts and renders.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from common import wire
from common.codes import Close, Err

#: Text exposition format served on ``/metrics``.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
COMMIT_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
SIZE_BUCKETS: Final = (1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)
GC_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: CPython's collector generations, youngest first.
GC_GENERATIONS: Final = (0, 1, 2)


def _tag(cls: type) -> str:
    return str(cls.__struct_config__.tag)  # type: ignore[attr-defined]


CLIENT_TAGS: Final = {cls: _tag(cls) for cls in wire.ClientFrame.__args__}
SERVER_TAGS: Final = {cls: _tag(cls) for cls in wire.ServerFrame.__args__}
_PREFIX: Final = b'{"type":"'


class Histogram:
    """A fixed-bucket histogram for one event-loop thread: an observation is a bisect and adds."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts by upper bound, as the exposition format wants them."""
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip([*self.bounds, float("inf")], self.counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        return buckets

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        return HistogramMetricFamily(name, doc, buckets=self.buckets(), sum_value=self.total)


@dataclass(slots=True)
class Tally:
    """Counters bumped where things happen; read only by :class:`NodeCollector`."""

    frames_in: dict[type, int] = field(default_factory=lambda: dict.fromkeys(CLIENT_TAGS, 0))
    frames_out: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(SERVER_TAGS.values(), 0)
    )
    invalid_frames: int = 0
    errors: dict[str, int] = field(default_factory=lambda: {e.value: 0 for e in Err})
    closes: dict[int, int] = field(default_factory=lambda: {int(c): 0 for c in Close})
    send_ack: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    batch_size: Histogram = field(default_factory=lambda: Histogram(SIZE_BUCKETS))
    commit: Histogram = field(default_factory=lambda: Histogram(COMMIT_BUCKETS))
    presence: dict[str, int] = field(default_factory=lambda: {"online": 0, "offline": 0})
    #: Garbage-collector pauses by generation (realtime/gcpolicy.py observes them).
    gc_pause: dict[int, Histogram] = field(
        default_factory=lambda: {gen: Histogram(GC_BUCKETS) for gen in GC_GENERATIONS}
    )
    #: Offline-message notifications (realtime/notices.py): offline messages and receipts
    #: written, and those dropped (PostgreSQL down, queue full).
    message_notices: dict[str, int] = field(
        default_factory=lambda: {"written": 0, "cleared": 0, "dropped": 0}
    )
    redis_errors: int = 0
    postgres_errors: int = 0

    def out(self, frame: wire.ServerFrame) -> None:
        self.frames_out[SERVER_TAGS[type(frame)]] += 1

    def out_bytes(self, data: bytes, sockets: int) -> None:
        """Count ``sockets`` writes of one encoded frame (its tag read from the bytes)."""
        if sockets and data.startswith(_PREFIX):
            tag = data[9 : data.find(b'"', 9)].decode()
            self.frames_out[tag] = self.frames_out.get(tag, 0) + sockets

    def error(self, code: Err) -> None:
        self.errors[code.value] += 1
        self.frames_out["error"] += 1

    def close(self, code: int) -> None:
        self.closes[code] = self.closes.get(code, 0) + 1


TALLY: Final = Tally()

#: Adapter loggers whose warnings (with an ``error`` field) are Redis or PostgreSQL failures.
_BACKENDS: Final = {
    "realtime.broker": "redis",
    "realtime.presence": "redis",
    "realtime.ops": "redis",
    "realtime.batch": "postgres",
    "realtime.store": "postgres",
    "realtime.notices": "postgres",
}


class FailureCounter(logging.Handler):
    """Counts the failures the Redis and PostgreSQL adapters log (one warning per failure)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING or not hasattr(record, "error"):
            return
        backend = getattr(record, "backend", None) or _BACKENDS.get(record.name)
        if backend == "redis":
            TALLY.redis_errors += 1
        elif backend == "postgres":
            TALLY.postgres_errors += 1


def install_failure_counter() -> None:
    """Attach :class:`FailureCounter` to the ``realtime`` logger once (records still propagate)."""
    logger = logging.getLogger("realtime")
    if not any(isinstance(h, FailureCounter) for h in logger.handlers):
        logger.addHandler(FailureCounter(logging.WARNING))


@dataclass(slots=True)
class Gauges:
    """Callables read at scrape time (each returns the current value)."""

    open_connections: Callable[[], int]
    sockets: Callable[[], int]
    users: Callable[[], int]
    batch_pending: Callable[[], int]
    committed: Callable[[], int]
    #: Batch calls made again with the resend probe (:attr:`realtime.batch.BatchWriter.reprobes`).
    batch_reprobes: Callable[[], int]
    slow_consumer_closes: Callable[[], int]
    delivery_lag_s: Callable[[], float]
    delivery_received: Callable[[], int]
    publish_dropped: Callable[[], int]
    draining: Callable[[], bool]
    #: The connect path's coalesced reads (:mod:`realtime.coalesce`): per source, the calls
    #: made and the keys they carried (keys / calls is how many sockets shared one read).
    connect_reads: Callable[[], dict[str, tuple[int, int]]]


class NodeCollector(Collector):
    """Renders :data:`TALLY` and the live :class:`Gauges` of one node."""

    def __init__(self, gauges: Gauges, tally: Tally = TALLY) -> None:
        self.gauges, self.tally = gauges, tally

    def collect(self) -> Iterator[Metric]:
        g, t = self.gauges, self.tally
        yield _gauge("mm_rt_connections_open", "Open WebSocket connections", g.open_connections())
        yield _gauge("mm_rt_sockets_authenticated", "Authenticated sockets", g.sockets())
        yield _gauge("mm_rt_users_authenticated", "Distinct users with a socket", g.users())
        yield _gauge(
            "mm_rt_batch_pending", "Requests waiting for the batch writer", g.batch_pending()
        )
        yield _gauge(
            "mm_rt_delivery_lag_seconds", "Age of the last stream entry read", g.delivery_lag_s()
        )
        yield _gauge("mm_rt_draining", "1 while the node drains", int(g.draining()))
        yield _counter("mm_rt_messages_committed", "Messages committed", g.committed())
        yield _counter(
            "mm_rt_batch_reprobes",
            "Batches committed again with the resend probe (a resend reached the table)",
            g.batch_reprobes(),
        )
        yield _counter(
            "mm_rt_slow_consumer_closes",
            "Sockets closed as slow consumers",
            g.slow_consumer_closes(),
        )
        yield _counter(
            "mm_rt_delivery_entries", "Delivery-stream entries read", g.delivery_received()
        )
        yield _counter(
            "mm_rt_publish_dropped", "Deliveries not published (Redis)", g.publish_dropped()
        )
        yield _counter("mm_rt_redis_errors", "Failed Redis operations", t.redis_errors)
        yield _counter("mm_rt_postgres_errors", "Failed PostgreSQL operations", t.postgres_errors)
        yield _counter("mm_rt_invalid_frames", "Frames that failed to decode", t.invalid_frames)
        yield _counter(
            "mm_rt_rate_limited_frames", "Frames refused by rate limits", t.errors["rate_limited"]
        )
        frames_in = CounterMetricFamily("mm_rt_frames_in", "Frames received", labels=["type"])
        for cls, n in t.frames_in.items():
            frames_in.add_metric([CLIENT_TAGS[cls]], n)
        yield frames_in
        yield _labelled("mm_rt_frames_out", "Frames written (per socket)", "type", t.frames_out)
        yield _labelled("mm_rt_errors", "Error frames sent", "code", t.errors)
        yield _labelled("mm_rt_closes", "Sockets closed by the node", "code", t.closes)
        yield _labelled("mm_rt_presence_changes", "Presence changes announced", "state", t.presence)
        yield _labelled(
            "mm_rt_message_notifications",
            "Offline messages and read receipts for message notifications",
            "outcome",
            t.message_notices,
        )
        yield t.send_ack.family("mm_rt_send_ack_seconds", "From a send frame to its ack")
        yield t.batch_size.family("mm_rt_batch_size", "Requests per batch commit")
        yield t.commit.family("mm_rt_batch_commit_seconds", "Time of one batch transaction")
        gc_pause = HistogramMetricFamily(
            "mm_rt_gc_pause_seconds",
            "Garbage-collector pauses (the event loop stands still)",
            labels=["generation"],
        )
        for gen, histogram in t.gc_pause.items():
            gc_pause.add_metric([str(gen)], histogram.buckets(), histogram.total)
        yield gc_pause
        reads = g.connect_reads()
        calls = CounterMetricFamily(
            "mm_rt_connect_reads", "Coalesced connect-path reads made", labels=["source"]
        )
        keys = CounterMetricFamily(
            "mm_rt_connect_read_keys", "Keys those reads carried", labels=["source"]
        )
        for source, (n_calls, n_keys) in reads.items():
            calls.add_metric([source], n_calls)
            keys.add_metric([source], n_keys)
        yield calls
        yield keys


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(name: str, doc: str, label: str, values: dict[str, int] | dict[int, int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, n in values.items():
        family.add_metric([str(key)], n)
    return family


def build_registry(gauges: Gauges) -> CollectorRegistry:
    """The node's own registry (not the process-global default one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(gauges))
    install_failure_counter()
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
