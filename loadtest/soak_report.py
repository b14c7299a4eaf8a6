"""What a soak's samples say: the series, a leveling-off verdict for each, the plot.

Owns turning the sampler's rows (:mod:`loadtest.soak`) into one series per figure the issue
names (node RSS, open descriptors, Redis memory, PostgreSQL table and index sizes, p99), the
verdict on each, and the PNG. PostgreSQL's ``messages`` table grows with every message stored
by design, so it is judged per stored (acked) message: a table whose bytes per row keep rising
is bloating. No I/O but the plot's file.

The verdict compares the last third of the run with the middle third (the first third is the
warm-up: caches, pools and allocator arenas filling): a series **grows** when it still rose by
more than its tolerance across the last third (least-squares slope times the third's span,
over the level) *and* that slope is more than half the middle third's: it is not slowing down.
A series that climbed and then stayed flat fails the first test, noise around a level too; a
straight climb passes both, however slow, once it rises more than the tolerance in a third of
the run.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

Row = dict[str, Any]
MB: Final = 1024 * 1024
MIN_SAMPLES: Final = 6
MIN_ROWS: Final = 100


def _pg(row: Row, table: str, part: int) -> float:
    return float(row["pg_tables"].get(table, [0, 0])[part])


def _per_message(row: Row, part: int) -> float | None:
    # A few rows in a table's first 8 KB pages say nothing about bytes per row yet.
    return _pg(row, "messages", part) / row["acked"] if row["acked"] >= MIN_ROWS else None


def _other_tables(row: Row) -> float:
    sizes = row["pg_tables"].items()
    return float(sum(t + i for name, (t, i) in sizes if name != "messages")) / MB


def _p99(kind: str) -> Callable[[Row], float | None]:
    def read(row: Row) -> float | None:
        return float(row[kind]["p99"]) if row[kind] else None

    return read


@dataclass(frozen=True, slots=True)
class Series:
    key: str
    label: str
    read: Callable[[Row], float | None]
    #: Growth (a fraction of the level) above which the series is said to grow.
    tolerance: float


SERIES: Final = (
    # Memory and descriptors are steady from sample to sample: 2 % in ten minutes is a trend.
    Series("node_rss_mb", "node RSS (MB)", lambda r: r["node_rss_kb"] / 1024, 0.02),
    Series("node_fds", "node open descriptors", lambda r: float(r["node_fds"]), 0.02),
    Series("redis_used_mb", "Redis used memory (MB)", lambda r: r["redis_used_memory"] / MB, 0.05),
    Series(
        "messages_table_bytes_per_msg",
        "messages table bytes / stored msg",
        lambda r: _per_message(r, 0),
        0.05,
    ),
    Series(
        "messages_index_bytes_per_msg",
        "messages indexes bytes / stored msg",
        lambda r: _per_message(r, 1),
        0.05,
    ),
    Series("other_tables_mb", "other tables + indexes (MB)", _other_tables, 0.05),
    # Tail latency is noisy minute to minute on a shared machine: only a sustained rise counts.
    Series("delivery_p99_ms", "send→delivery p99 (ms)", _p99("delivery"), 0.5),
    Series("ack_p99_ms", "send→ack p99 (ms)", _p99("ack"), 0.5),
)


@dataclass(frozen=True, slots=True)
class Verdict:
    series: str
    verdict: str  # "levels off", "grows" or "too short"
    first: float
    last: float
    middle_mean: float
    last_mean: float
    #: (last third's mean - middle third's) / level.
    growth: float
    #: The least-squares rise across the last third / level.
    last_third_rise: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def slope(values: Sequence[float]) -> float:
    """Least-squares slope per sample (0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    x_mean, y_mean = (n - 1) / 2, statistics.fmean(values)
    num = sum((i - x_mean) * (y - y_mean) for i, y in enumerate(values))
    return num / sum((i - x_mean) ** 2 for i in range(n))


def level_off(name: str, values: Sequence[float], tolerance: float) -> Verdict:
    """Does ``values`` (one per sample, in time order) level off? See the module docstring."""
    n = len(values)
    if n < MIN_SAMPLES:
        ends = (values[0], values[-1]) if values else (0.0, 0.0)
        return Verdict(name, "too short", *ends, 0.0, 0.0, 0.0, 0.0)
    middle, tail = values[n // 3 : 2 * n // 3], values[2 * n // 3 :]
    middle_mean, last_mean = statistics.fmean(middle), statistics.fmean(tail)
    level = max(abs(middle_mean), abs(last_mean), 1e-9)
    growth = (last_mean - middle_mean) / level
    tail_slope = slope(tail)
    rise = tail_slope * (len(tail) - 1) / level
    grows = rise > tolerance and tail_slope > 0.5 * slope(middle)
    return Verdict(
        name,
        "grows" if grows else "levels off",
        values[0],
        values[-1],
        round(middle_mean, 3),
        round(last_mean, 3),
        round(growth, 4),
        round(rise, 4),
    )


def points(samples: Sequence[Row], series: Series) -> tuple[list[float], list[float]]:
    """(minutes, values) of one series, leaving out samples where it has no value."""
    xs, ys = [], []
    for row in samples:
        value = series.read(row)
        if value is not None:
            xs.append(row["t_s"] / 60)
            ys.append(value)
    return xs, ys


def verdicts(samples: Sequence[Row]) -> list[Verdict]:
    return [level_off(s.key, points(samples, s)[1], s.tolerance) for s in SERIES]


def plot(samples: Sequence[Row], found: Sequence[Verdict], path: Path, title: str) -> None:
    """One panel per series against minutes, each titled with its verdict (a small PNG).

    The axes scale to the data, so a small steady rise shows as a slope, not a flat line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 2, figsize=(10, 10), sharex=True)
    by_key = {v.series: v for v in found}
    for ax, series in zip(axes.flat, SERIES, strict=True):
        xs, ys = points(samples, series)
        verdict = by_key[series.key].verdict
        ax.plot(xs, ys, "o-", markersize=3, color="tab:red" if verdict == "grows" else "tab:blue")
        ax.set_title(f"{series.label}: {verdict}", fontsize=9)
        ax.grid(True, alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("minutes")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=70)
    plt.close(fig)


def lines(record: Row) -> list[str]:
    """The run in a few lines: per series first → last and the verdict, churn, the check."""
    out = []
    for v in record["verdicts"]:
        out.append(
            f"  {v['series']:<30}{v['first']:>12.1f} → {v['last']:>10.1f}"
            f"   middle {v['middle_mean']:>10.1f} last {v['last_mean']:>10.1f}"
            f"   {v['verdict']}"
        )
    idle, chat = record["idle"], record["chat"]
    out.append(
        f"  idle {idle['opened']}/{idle['requested']} open, {idle['reconnects']} reconnects"
        f" ({idle['reconnect_failures']} failed), errors {idle['errors']} closes {idle['closes']}"
    )
    out.append(f"  chat sent {chat['sent']} acked {chat['acked']} check {chat['check']}")
    return out
