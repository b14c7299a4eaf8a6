"""What a load run measured and what its end-of-run check found: plain data and arithmetic.

Owns the latency summary (p50/p95/p99/max in milliseconds), the report of a chat run and of an
idle run (JSON-ready dicts and a few human lines), and the correctness check that compares the
generator's history with PostgreSQL and with what the recipients received: every acked message
is stored exactly once, with the ``seq`` its ack named, each conversation's ``seq`` is gapless,
and every acked message reached its recipient. No I/O here: the generator gathers, this judges.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtest.population import StoredRow


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds."""

    n: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: Iterable[float]) -> Latency:
        values = sorted(seconds)
        return cls(
            n=len(values),
            p50=round(percentile(values, 50) * 1000, 3),
            p95=round(percentile(values, 95) * 1000, 3),
            p99=round(percentile(values, 99) * 1000, 3),
            max=round((values[-1] if values else 0.0) * 1000, 3),
        )


@dataclass(slots=True)
class Check:
    """The end-of-run verdict; ``ok`` only when every list is empty."""

    acked: int = 0
    stored: int = 0
    acked_missing: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    wrong_seq: list[str] = field(default_factory=list)
    seq_gaps: list[int] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        # A run where nothing was acked proves nothing: not ok either.
        return self.acked > 0 and not (
            self.acked_missing
            or self.duplicates
            or self.wrong_seq
            or self.seq_gaps
            or self.undelivered
        )

    def summary(self) -> dict[str, Any]:
        """Counts, and the first few offenders of each kind."""
        out: dict[str, Any] = {"ok": self.ok, "acked": self.acked, "stored": self.stored}
        for name in ("acked_missing", "duplicates", "wrong_seq", "seq_gaps", "undelivered"):
            values = getattr(self, name)
            out[name] = len(values)
            if values:
                out[f"{name}_sample"] = values[:5]
        return out


def check_run(
    *,
    acked: dict[str, tuple[int, int, int]],
    delivered: set[tuple[int, str]],
    stored: list[StoredRow],
    check_seq: bool = True,
) -> Check:
    """Compare the history with PostgreSQL and the recipients.

    ``acked`` maps cmid to (sender, recipient, seq named by the ack); ``delivered`` holds
    (recipient, cmid) pairs the recipients' sockets received; ``stored`` is every row of the
    run's conversations.
    """
    check = Check(acked=len(acked), stored=len(stored))
    counts = Counter((row.sender, row.cmid) for row in stored)
    check.duplicates = [f"{s}:{c}" for (s, c), n in counts.items() if n > 1]
    by_key = {(row.sender, row.cmid): row for row in stored}
    for cmid, (sender, recipient, seq) in acked.items():
        row = by_key.get((sender, cmid))
        if row is None:
            check.acked_missing.append(cmid)
            continue
        if check_seq and counts[(sender, cmid)] == 1 and row.seq != seq:
            check.wrong_seq.append(cmid)
        if (recipient, cmid) not in delivered:
            check.undelivered.append(cmid)
    seqs: dict[int, list[int]] = {}
    for row in stored:
        seqs.setdefault(row.cid, []).append(row.seq)
    for cid, values in sorted(seqs.items()):
        values.sort()
        if values != list(range(1, len(values) + 1)):
            check.seq_gaps.append(cid)
    return check


@dataclass(slots=True)
class ChatReport:
    target: str
    mode: str
    nodes: int
    pairs: int
    window: int
    offered_rate: float | None
    duration_s: float
    sent: int
    acked: int
    delivered: int
    delivered_per_s: float
    acked_per_s: float
    send_to_ack: Latency
    send_to_delivery: Latency
    #: Rate mode only: how late the generator itself released the sends that the in-flight
    #: window did not hold back. Part of both latencies above; past ~1 ms the load tool is
    #: short of CPU, and a latency target below this figure cannot be judged on that machine.
    release_lag: Latency | None
    errors: dict[str, int]
    closes: dict[str, int]
    check: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        a, d = self.send_to_ack, self.send_to_delivery
        rate = f" offered {self.offered_rate:.0f}/s" if self.offered_rate else ""
        lag = self.release_lag
        release = (
            [
                f"  release lag     p50 {lag.p50:.2f}  p95 {lag.p95:.2f}  p99 {lag.p99:.2f}"
                f"  max {lag.max:.2f} ms  (the generator's own, included above)"
            ]
            if lag is not None
            else []
        )
        return [
            f"{self.target} {self.mode}{rate}: {self.pairs} pairs on {self.nodes} node(s),"
            f" window {self.window}, {self.duration_s:.1f} s",
            f"  sent {self.sent}  acked {self.acked}  delivered {self.delivered}",
            f"  delivered {self.delivered_per_s:,.0f} msg/s   acked {self.acked_per_s:,.0f} msg/s",
            f"  send->ack       p50 {a.p50:.2f}  p95 {a.p95:.2f}  p99 {a.p99:.2f}"
            f"  max {a.max:.2f} ms",
            f"  send->delivery  p50 {d.p50:.2f}  p95 {d.p95:.2f}  p99 {d.p99:.2f}"
            f"  max {d.max:.2f} ms",
            *release,
            f"  errors {self.errors or '{}'}  closes {self.closes or '{}'}",
            f"  check {self.check}",
        ]


@dataclass(slots=True)
class IdleReport:
    target: str
    requested: int
    opened: int
    held: int
    users: int
    sources: int
    rss_before_kb: int
    rss_after_kb: int
    rss_per_connection_kb: float
    open_s: float
    hold_s: float
    #: The node's collector while opening and holding: per generation, collections and
    #: seconds paused (None for a target without ``mm_rt_gc_pause_seconds``).
    gc_pauses: dict[str, dict[str, float]] | None
    errors: dict[str, int]
    closes: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        return [
            f"{self.target} idle: {self.opened}/{self.requested} authenticated connections"
            f" ({self.users} users, {self.sources} source addresses) in {self.open_s:.1f} s",
            f"  held {self.held} for {self.hold_s:.1f} s;  node RSS {self.rss_before_kb} ->"
            f" {self.rss_after_kb} KB = {self.rss_per_connection_kb:.2f} KB/connection",
            *(
                [
                    "  node GC meanwhile: "
                    + ", ".join(
                        f"gen{gen} {int(p['collections'])}x {p['seconds'] * 1000:.0f} ms"
                        for gen, p in self.gc_pauses.items()
                    )
                ]
                if self.gc_pauses
                else []
            ),
            f"  errors {self.errors or '{}'}  closes {self.closes or '{}'}",
        ]
