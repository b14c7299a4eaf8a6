"""The soak at a small scale against a real node: samples, churn, verdicts, plot and check.

A realtime node runs as a child process (real sockets, the test database and Redis); the soak
paces a few pairs, holds idle sockets that reconnect in turn, samples every few ticks and must
end with every acked message stored once, gapless and delivered. The verdict itself is tested
on hand-made series, so a verdict that always says "levels off" cannot pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.settings import Settings
from loadtest.soak import SoakOptions, soak
from loadtest.soak_report import SERIES, level_off, lines, plot, slope, verdicts
from tests.realtime.support import start_node
from tests.support import TICK, ServiceProcess

IDLE = 24
PER_USER = 4
OPTIONS = SoakOptions(
    duration_s=400 * TICK,
    rate=200.0,
    pairs=4,
    idle=IDLE,
    churn_per_s=1 / (4 * TICK),
    sample_s=40 * TICK,
    per_user=PER_USER,
    window=8,
    body_chars=32,
    warmup_s=0.0,
)


@pytest.fixture(scope="module")
def soak_node(settings: Settings) -> Iterator[ServiceProcess]:
    # Lift the per-socket rate limit for the generator, and leave a reconnect room beside
    # its user's other idle sockets.
    node = start_node(
        "soak",
        MM_RATE_PER_S="100000",
        MM_RATE_BURST="100000",
        MM_MAX_CONNECTIONS_PER_USER=str(2 * PER_USER),
    )
    try:
        yield node
    finally:
        assert node.stop() == 0, f"node did not stop cleanly, see {node.log_path}"


@pytest.fixture(scope="module")
async def record(soak_node: ServiceProcess, settings: Settings) -> dict[str, Any]:
    assert soak_node.proc is not None
    return await soak(
        OPTIONS,
        urls=[f"ws://127.0.0.1:{soak_node.port}/"],
        node_pid=soak_node.proc.pid,
        settings=settings,
    )


async def test_a_short_soak_checks_out(record: dict[str, Any]) -> None:
    chat, idle = record["chat"], record["idle"]
    assert chat["check"]["ok"], chat["check"]
    assert chat["acked"] == chat["sent"] and chat["sent"] >= 0.8 * OPTIONS.rate * 20
    assert chat["errors"] == {} and chat["closes"] == {}
    # Every idle socket opened and each reconnect succeeded; the node closed none of them.
    assert idle["opened"] == IDLE and idle["reconnects"] >= 50
    assert idle["reconnect_failures"] == 0 and idle["errors"] == {} and idle["closes"] == {}


async def test_every_interval_is_sampled(record: dict[str, Any]) -> None:
    samples = record["samples"]
    assert [round(s["t_s"] / (40 * TICK)) for s in samples] == list(range(11))
    for s in samples:
        # The node holds at least its idle sockets and both members of each pair.
        assert s["node_fds"] >= IDLE + 2 * OPTIONS.pairs and s["node_rss_kb"] > 10_000
        # The churn reconnects one socket at a time: at most one is down when sampled.
        assert s["redis_used_memory"] > 0 and IDLE - 1 <= s["idle_held"] <= IDLE
        assert {"messages", "users", "conversations"} <= set(s["pg_tables"])
        assert s["node_full_collections"] >= 1  # the node's own, before it froze its heap
    assert samples[0]["delivered_per_s"] is None and samples[0]["delivery"] is None
    later = samples[1:]
    assert all(s["delivery"]["n"] > 0 and s["ack"]["p99"] > 0 for s in later)
    assert all(0.5 * OPTIONS.rate <= s["delivered_per_s"] <= 1.5 * OPTIONS.rate for s in later)
    acked = [s["acked"] for s in samples]
    assert acked == sorted(acked) and acked[-1] > acked[1] > 0
    # The messages table takes every stored message: its heap grew over the run.
    assert samples[-1]["pg_tables"]["messages"][0] > samples[1]["pg_tables"]["messages"][0]
    assert samples[-1]["reconnects"] > samples[1]["reconnects"] > 0


async def test_verdicts_and_plot(record: dict[str, Any], tmp_path: Path) -> None:
    found = verdicts(record["samples"])
    assert [v.series for v in found] == [s.key for s in SERIES]
    assert all(v.verdict in ("levels off", "grows") for v in found)
    # Reconnects replace sockets one for one: the node's descriptors do not climb.
    assert next(v for v in found if v.series == "node_fds").verdict == "levels off"
    path = tmp_path / "soak.png"
    plot(record["samples"], found, path, "test soak")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record["verdicts"] = [v.as_dict() for v in found]
    json.dumps(record)  # the record is JSON as it stands
    assert len(lines(record)) == len(SERIES) + 2


# -- the verdict, on hand-made series --------------------------------------------------------


def test_a_flat_or_noisy_series_levels_off() -> None:
    assert level_off("flat", [100.0] * 30, 0.05).verdict == "levels off"
    noisy = [100.0 + (3 if i % 2 else -3) for i in range(30)]
    assert level_off("noisy", noisy, 0.05).verdict == "levels off"


def test_a_steady_climb_grows() -> None:
    climb = [100.0 + 2 * i for i in range(30)]
    verdict = level_off("leak", climb, 0.05)
    assert verdict.verdict == "grows"
    assert verdict.growth > 0.05 and verdict.last_third_rise > 0.05
    assert (verdict.first, verdict.last) == (100.0, 158.0)


def test_a_slow_straight_climb_grows_and_the_same_rise_slowing_down_does_not() -> None:
    # The 30-minute soak's node RSS: 117 MB, +0.75 MB a minute, never slowing.
    straight = [117.0 + 0.75 * i for i in range(31)]
    assert level_off("rss", straight, 0.02).verdict == "grows"
    # As much rise in the last third, but at a quarter of the middle third's pace.
    slowing = [100.0 + 4 * min(i, 20) + (i - 20 if i > 20 else 0) for i in range(31)]
    assert level_off("slowing", slowing, 0.02).verdict == "levels off"


def test_a_climb_that_stops_before_the_last_third_levels_off() -> None:
    warm = [100.0 + 5 * min(i, 20) for i in range(30)]
    verdict = level_off("warm-up", warm, 0.05)
    assert verdict.growth > 0.05  # the last third sits above the middle one
    assert verdict.verdict == "levels off"  # but it stopped rising


def test_too_few_samples_get_no_verdict() -> None:
    assert level_off("short", [1.0, 2.0, 3.0], 0.05).verdict == "too short"
    assert level_off("empty", [], 0.05).verdict == "too short"


def test_slope_is_per_sample() -> None:
    assert slope([1.0, 3.0, 5.0, 7.0]) == pytest.approx(2.0)
    assert slope([4.0]) == 0.0
