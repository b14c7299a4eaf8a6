"""The load generator's end-of-run check on a small, short load against real servers.

A realtime node and the FastAPI baseline run as child processes (real sockets, the test
database and Redis); the generator drives each with its adapter and must find every acked
message stored exactly once, in gapless order, and delivered to its recipient. The pure parts
(the check itself, percentiles) are tested on hand-made histories so a broken check cannot pass
a broken server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.settings import Settings
from loadtest.generator import (
    chat_run,
    check_loopback,
    due_now,
    idle_run,
    node_gc_pauses,
    pause_growth,
    source_address,
)
from loadtest.population import StoredRow
from loadtest.report import Latency, check_run, percentile
from loadtest.stack import baseline_server
from tests.realtime.conftest import start_node
from tests.support import ROOT, TICK, ServiceProcess

PAIRS = 4
MESSAGES = 200


@pytest.fixture(scope="module")
def load_node(settings: Settings) -> Iterator[ServiceProcess]:
    # The generator sends far faster than a phone: lift the per-socket rate limit for it.
    node = start_node("load", MM_RATE_PER_S="100000", MM_RATE_BURST="100000")
    try:
        yield node
    finally:
        assert node.stop() == 0, f"node did not stop cleanly, see {node.log_path}"


@pytest.fixture(scope="module")
def node_url(load_node: ServiceProcess) -> str:
    return f"ws://127.0.0.1:{load_node.port}/"


@pytest.fixture(scope="module")
def baseline_url(settings: Settings) -> Iterator[str]:
    # The baseline takes its port as an argument, so it runs through the bench's launcher
    # (same environment: the test database, Redis and keys).
    server = baseline_server(core=None, env={}, log_dir=ROOT / ".data" / "test-logs").start()
    try:
        yield f"ws://127.0.0.1:{server.port}/"
    finally:
        server.stop()


async def test_peak_run_against_a_node_checks_out(node_url: str, settings: Settings) -> None:
    report = await chat_run(
        target="mergemeet",
        urls=[node_url],
        pairs=PAIRS,
        window=4,
        duration_s=60 * TICK,
        messages=MESSAGES,
        warmup_s=0,
        settings=settings,
    )
    assert report.sent == MESSAGES
    assert report.acked == MESSAGES, report.lines()
    assert report.delivered == MESSAGES
    assert report.errors == {} and report.closes == {}
    assert report.check["ok"], report.check
    assert report.check["stored"] == MESSAGES
    assert 0 < report.send_to_ack.p50 <= report.send_to_ack.max
    assert report.send_to_delivery.n == MESSAGES
    assert report.release_lag is None  # no schedule in peak mode, nothing released late


async def test_offered_rate_run_checks_out(node_url: str, settings: Settings) -> None:
    marks: list[str] = []
    report = await chat_run(
        target="mergemeet",
        urls=[node_url],
        pairs=PAIRS,
        window=16,
        duration_s=40 * TICK,
        messages=MESSAGES,
        rate=100 / (40 * TICK),  # about 100 messages in the run
        warmup_s=0,
        settings=settings,
        on_window=marks.append,
    )
    # The bench's CPU window opens before the first send and closes when sending stops.
    assert marks == ["start", "end"]
    assert 60 <= report.sent <= MESSAGES
    assert report.acked == report.sent
    assert report.check["ok"], report.check
    # Sends the window did not hold back (at this rate, nearly all) have a release lateness:
    # never negative (none goes out early), and part of the latency charged to the server.
    lag = report.release_lag
    assert lag is not None and report.sent // 2 <= lag.n <= report.sent
    assert 0 <= lag.p50 <= lag.max <= report.send_to_ack.max


async def test_baseline_adapter_checks_out(baseline_url: str, settings: Settings) -> None:
    report = await chat_run(
        target="baseline",
        urls=[baseline_url],
        pairs=PAIRS,
        window=2,
        duration_s=100 * TICK,
        messages=MESSAGES // 2,
        warmup_s=0,
        settings=settings,
    )
    assert report.acked == MESSAGES // 2, report.lines()
    assert report.check["ok"], report.check


# -- the check itself, on hand-made histories -----------------------------------------------


def _rows(*rows: tuple[int, str, int, int]) -> list[StoredRow]:
    return [StoredRow(*r) for r in rows]


def test_check_passes_a_consistent_history() -> None:
    acked = {"a1": (1, 2, 1), "b1": (2, 1, 2)}
    stored = _rows((1, "a1", 7, 1), (2, "b1", 7, 2), (1, "unacked", 7, 3))
    check = check_run(acked=acked, delivered={(2, "a1"), (1, "b1")}, stored=stored)
    assert check.ok and check.summary()["stored"] == 3


def test_check_finds_each_kind_of_fault() -> None:
    acked = {"lost": (1, 2, 1), "twice": (1, 2, 2), "moved": (1, 2, 9), "mute": (1, 2, 4)}
    stored = _rows((1, "twice", 7, 2), (1, "twice", 7, 3), (1, "moved", 7, 5), (1, "mute", 7, 4))
    check = check_run(acked=acked, delivered={(2, "twice"), (2, "moved")}, stored=stored)
    assert not check.ok
    assert check.acked_missing == ["lost"]
    assert check.duplicates == ["1:twice"]
    assert check.wrong_seq == ["moved"]
    assert check.seq_gaps == [7]  # 1 is missing
    assert check.undelivered == ["mute"]


def test_a_run_with_nothing_acked_is_not_ok() -> None:
    assert not check_run(acked={}, delivered=set(), stored=[]).ok


def test_percentiles_use_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile(values, 100) == 100 and percentile([], 99) == 0
    lat = Latency.of([0.001, 0.002, 0.010])
    assert (lat.p50, lat.max, lat.n) == (2.0, 10.0, 3)


def test_each_send_is_due_at_its_scheduled_time_not_one_interval_later() -> None:
    # At 200/s send k is due at k * 5 ms: the first at once, the second at 5 ms.
    assert [due_now(t, 200.0) for t in (0.0, 0.0049, 0.005, 0.0101)] == [1, 1, 2, 3]
    assert due_now(1.0, 10_000.0) == 10_001


def test_only_loopback_targets_and_sources() -> None:
    assert check_loopback("ws://127.0.0.1:8765/") == "ws://127.0.0.1:8765/"
    with pytest.raises(SystemExit):
        check_loopback("ws://10.0.0.1:8765/")
    assert source_address(0, 1) is None
    assert source_address(0, 3) == "127.0.0.2"
    assert source_address(45_000, 3) == "127.0.0.4"


async def test_idle_run_holds_its_sockets_and_reads_the_nodes_collector(
    load_node: ServiceProcess, node_url: str, settings: Settings
) -> None:
    assert load_node.proc is not None
    report = await idle_run(
        target="mergemeet",
        urls=[node_url],
        connections=12,
        node_pid=load_node.proc.pid,
        per_user=4,  # the test nodes' MM_MAX_CONNECTIONS_PER_USER
        hold_s=2 * TICK,
        settle_s=TICK,
        settings=settings,
    )
    assert (report.opened, report.held, report.users) == (12, 12, 3), report.lines()
    assert report.errors == {} and report.closes == {}
    assert report.gc_pauses is not None and set(report.gc_pauses) == {"0", "1", "2"}
    assert all(p["collections"] >= 0 and p["seconds"] >= 0 for p in report.gc_pauses.values())


def test_gc_pauses_come_from_a_node_and_not_from_the_baseline(
    node_url: str, baseline_url: str
) -> None:
    pauses = node_gc_pauses(node_url)
    assert pauses is not None
    # The node's collection before it froze its startup heap (realtime/gcpolicy.py) was timed.
    collections, seconds = pauses["2"]
    assert collections >= 1 and seconds > 0
    assert node_gc_pauses(baseline_url) is None  # no /metrics there


def test_pause_growth_is_the_difference_per_generation() -> None:
    before = {"0": (10.0, 0.5), "2": (1.0, 0.25)}
    after = {"0": (14.0, 0.75), "1": (2.0, 0.125), "2": (1.0, 0.25)}
    assert pause_growth(before, after) == {
        "0": {"collections": 4.0, "seconds": 0.25},
        "1": {"collections": 2.0, "seconds": 0.125},
        "2": {"collections": 0.0, "seconds": 0.0},
    }
    assert pause_growth(None, after) is None
