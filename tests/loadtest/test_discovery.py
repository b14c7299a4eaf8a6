"""The discovery figure at a tiny scale: real API, real PostgreSQL+PostGIS, real plan.

The figure seeds its profiles into a private database (``<test database>_discovery``, dropped
afterwards) so that the rest of the suite never sees them, starts the API as the bench does,
signs the searchers in, times a few requests and explains the endpoint's statement. The plan
reader is also tested on hand-made plans, so a reader that always says "GiST" cannot pass.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from alembic import command
from common.settings import Settings
from loadtest import discovery_population
from loadtest.discovery import measure
from loadtest.discovery_plan import GIST_INDEX, plan_of_page, summarize
from loadtest.discovery_population import SEARCHERS, Population, spread_points
from loadtest.stack import api_server, recreate_database
from tests.db_support import TEST_DB, TEST_DB_URL, alembic_config
from tests.support import ROOT

PROFILES = 3000
REQUESTS = 8 * len(SEARCHERS)

INDEX_PLAN = [
    "Bitmap Heap Scan on profiles  (cost=4.2..9.9 rows=1 width=82)"
    " (actual time=0.1..0.2 rows=7 loops=1)",
    "  ->  Bitmap Index Scan on ix_profiles_location  (cost=0.00..4.2 rows=9 width=0)"
    " (actual time=0.05..0.05 rows=9 loops=1)",
    "Buffers: shared hit=40",
    "Planning Time: 0.9 ms",
    "Execution Time: 1.5 ms",
]
SEQ_PLAN = [
    "->  Seq Scan on profiles  (cost=0.00..12.5 rows=3 width=82)"
    " (actual time=0.01..0.3 rows=11 loops=1)",
    "      Filter: st_dwithin(location, '0101'::geography, '10000'::double precision, true)",
    "Execution Time: 2.0 ms",
]


@dataclass(frozen=True)
class Seeded:
    api_url: str
    settings: Settings
    population: Population


@pytest.fixture(scope="module")
def seeded(settings: Settings) -> Iterator[Seeded]:
    name = f"{TEST_DB}_discovery"
    url = asyncio.run(recreate_database(TEST_DB_URL, name))
    try:
        command.upgrade(alembic_config(url), "head")
        population = asyncio.run(
            discovery_population.seed(url.replace("+asyncpg", ""), PROFILES, seed=3)
        )
        env = {"MM_DATABASE_URL": url}
        server = api_server(core=None, env=env, log_dir=ROOT / ".data" / "test-logs").start()
        try:
            yield Seeded(
                f"http://127.0.0.1:{server.port}",
                settings.model_copy(update={"database_url": url}),
                population,
            )
        finally:
            server.stop()
    finally:
        asyncio.run(recreate_database(TEST_DB_URL, name, create=False))


async def test_tiny_discovery_figure_times_requests_and_finds_the_gist_index(
    seeded: Seeded,
) -> None:
    report = await measure(
        seeded.api_url, seeded.settings, seeded.population, requests=REQUESTS, max_s=60.0
    )
    assert report.profiles == PROFILES
    assert report.latency.n == REQUESTS
    assert 0 < report.latency.p50 <= report.latency.p99 <= report.latency.max
    assert report.requests_per_s > 0
    assert [one.n for one in report.by_searcher] == [REQUESTS // len(SEARCHERS)] * len(SEARCHERS)
    # The city searchers have people around them; nobody sees more than a page.
    assert report.page_items[0] > 0 and max(report.page_items) <= 20
    assert [len(one) for one in report.samples_ms] == [REQUESTS // len(SEARCHERS)] * len(SEARCHERS)
    assert max(max(one) for one in report.samples_ms) == pytest.approx(report.latency.max, abs=0.1)
    for plans in (report.custom_plans, report.generic_plans):
        assert [plan.searcher for plan in plans] == [s.name for s in SEARCHERS]
        for plan in plans:
            assert plan.gist_used, "\n".join(plan.lines)
            assert not any("Seq Scan" in node for node in plan.profiles_access), plan.lines
            assert plan.execution_ms is not None and plan.execution_ms > 0
            assert plan.scan_rows is not None
    # No table is scanned whole once per candidate (custom plans that expected one candidate
    # scanned users per row: seconds on a city's population).
    for plan in report.custom_plans:
        users_per_row = [scan for scan in plan.repeated_seq_scans if " on users" in scan]
        assert not users_per_row, "\n".join(plan.lines)
    # EXPLAIN plans for the bound values; the generic plan was made without them.
    assert all(plan.planning_ms is not None for plan in report.custom_plans)
    assert all("$" in "\n".join(plan.lines) for plan in report.generic_plans)
    assert report.gist_used(report.generic_plans) == f"{len(SEARCHERS)}/{len(SEARCHERS)}"


def test_plan_reader_tells_an_index_scan_from_a_seq_scan() -> None:
    index = summarize("a", 10, INDEX_PLAN)
    assert index.gist_used
    assert index.profiles_access == [
        "Bitmap Heap Scan on profiles",
        f"Bitmap Index Scan on {GIST_INDEX}",
    ]
    assert (index.scan_rows, index.execution_ms, index.planning_ms) == (7, 1.5, 0.9)
    assert index.scan_estimate == 1
    assert index.buffers == "shared hit=40"
    seq = summarize("b", 10, SEQ_PLAN)
    assert not seq.gist_used
    assert seq.profiles_access == ["Seq Scan on profiles"]
    assert (seq.scan_rows, seq.execution_ms, seq.planning_ms) == (11, 2.0, None)
    assert index.repeated_seq_scans == seq.repeated_seq_scans == []
    looped = summarize(
        "c",
        25,
        [
            *INDEX_PLAN,
            "  ->  Seq Scan on users  (cost=0.00..608.00 rows=20000 width=18)"
            " (actual time=0.001..1.212 rows=10149 loops=2315)",
        ],
    )
    assert looped.repeated_seq_scans == ["Seq Scan on users x2315"]


def test_points_are_mostly_in_the_city_and_some_far_out() -> None:
    points = spread_points(random.Random(1), 2000)
    centre_lat, centre_lon = discovery_population.CITY
    near = sum(abs(lat - centre_lat) < 0.5 and abs(lon - centre_lon) < 0.75 for lat, lon in points)
    assert 0.7 < near / len(points) < 0.85
    assert any(abs(lat - centre_lat) > 1.5 for lat, _ in points)


def test_plan_of_page_takes_the_page_query_from_auto_explain() -> None:
    viewer = "duration: 0.2 ms  plan:\nQuery Text: SELECT profiles.gender\nIndex Scan  (cost=1..2)"
    page = (
        "duration: 85.1 ms  plan:\nQuery Text: WITH near AS MATERIALIZED\n(SELECT 1)\n"
        "Subquery Scan on page  (cost=1.0..2.0 rows=1 width=8)\n  CTE near\n"
        "    ->  Index Scan using ix_profiles_location on profiles  (cost=0.4..9.9 rows=1"
        " width=82) (actual time=0.1..3.0 rows=35 loops=1)"
    )
    lines = plan_of_page([viewer, page])
    assert lines[0] == "duration: 85.1 ms  plan:"
    assert lines[1].startswith("Subquery Scan on page")
    plan = summarize("a", 10, lines, "generic")
    assert plan.gist_used and plan.scan_rows == 35 and plan.execution_ms == 85.1
    assert plan_of_page([viewer]) == []
