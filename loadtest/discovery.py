"""The discovery figure (issue 20): ``GET /api/discovery`` latency on seeded profiles, and its plan.

Owns measuring discovery the way a phone meets it: the searchers of
:mod:`loadtest.discovery_population` sign in over the API (``POST /api/auth/login``), then
``GET /api/discovery`` (first page, the route's default size) is timed one request at a time,
round-robin over the searchers, bounded by a request count and a number of seconds. Nothing is
warmed up first: on each API connection a statement's first
:data:`~loadtest.discovery_plan.CUSTOM_PLAN_RUNS` executions run on custom plans, the later ones
on the generic plan (see :mod:`loadtest.discovery_plan`), and the two can differ by orders of
magnitude. So the report gives p50/p95/p99/max in milliseconds over all requests and by
searcher, which of each searcher's requests took over :data:`SLOW_MS` (by their index), every
sample (in the results JSON), and requests per second. Then it reads both plans of each
searcher's statement and whether they use the GiST index.

It needs a running API on a loopback address (``loadtest.bench`` starts one, pinned like the
other measured servers) and the settings the API runs with, for the plans. It never changes the
product's settings.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Final

import httpx

from common.db import make_engine, make_sessionmaker
from common.settings import Settings
from loadtest.discovery_plan import (
    GIST_INDEX,
    Plan,
    custom_plan,
    generic_plan,
    summarize,
)
from loadtest.discovery_population import SEARCHERS, Population
from loadtest.generator import check_loopback
from loadtest.report import Latency

REQUEST_TIMEOUT_S: Final = 30.0
#: A request slower than this is listed by its index in the searcher's sequence.
SLOW_MS: Final = 1000.0


@dataclass(frozen=True, slots=True)
class DiscoveryReport:
    profiles: int
    latency: Latency
    #: By searcher, in :data:`SEARCHERS` order: its latency, and every request's ms in order.
    by_searcher: list[Latency]
    samples_ms: list[list[float]]
    requests_per_s: float
    wall_s: float
    #: Candidates on the first page of each searcher.
    page_items: list[int]
    custom_plans: list[Plan]
    generic_plans: list[Plan]

    def gist_used(self, plans: list[Plan]) -> str:
        return f"{sum(plan.gist_used for plan in plans)}/{len(plans)}"

    def slow(self, searcher: int) -> list[int]:
        """Indexes of the searcher's requests that took over ``SLOW_MS``."""
        return [i for i, value in enumerate(self.samples_ms[searcher]) if value > SLOW_MS]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        lat = self.latency
        out = [
            f"  {self.profiles} profiles; {lat.n} requests in {self.wall_s:.1f} s,"
            f" {self.requests_per_s:.1f} requests/s (one at a time)",
            f"  GET /api/discovery ms: p50 {lat.p50} p95 {lat.p95} p99 {lat.p99} max {lat.max}",
            f"  GiST ({GIST_INDEX}) used: custom plans {self.gist_used(self.custom_plans)},"
            f" generic plans {self.gist_used(self.generic_plans)}",
        ]
        for index, (searcher, items, one, custom, generic) in enumerate(
            zip(
                SEARCHERS,
                self.page_items,
                self.by_searcher,
                self.custom_plans,
                self.generic_plans,
                strict=True,
            )
        ):
            out += [
                f"  {searcher.name} (radius {searcher.radius_km} km, {items} on page 1):"
                f" {one.n} requests, ms p50 {one.p50} p99 {one.p99} max {one.max};"
                f" over {SLOW_MS:.0f} ms: requests {self.slow(index)}",
                f"    {custom.line()}",
                f"    {generic.line()}",
            ]
        return out


async def sign_in(client: httpx.AsyncClient, population: Population) -> list[str]:
    """An access token per searcher, through the API's own login."""
    tokens = []
    for email in population.searcher_emails:
        response = await client.post(
            "/api/auth/login", json={"email": email, "password": population.password}
        )
        response.raise_for_status()
        tokens.append(str(response.json()["access_token"]))
    return tokens


async def time_requests(
    client: httpx.AsyncClient, tokens: list[str], *, requests: int, max_s: float
) -> tuple[list[float], float, list[int]]:
    """Seconds per request (round-robin over ``tokens``), the wall time, each one's page size."""
    headers = [{"Authorization": f"Bearer {token}"} for token in tokens]
    page_items = [0] * len(headers)
    samples: list[float] = []
    start = time.perf_counter()
    deadline = start + max_s
    while len(samples) < requests and time.perf_counter() < deadline:
        searcher = len(samples) % len(headers)
        sent = time.perf_counter()
        response = await client.get("/api/discovery", headers=headers[searcher])
        samples.append(time.perf_counter() - sent)
        response.raise_for_status()
        page_items[searcher] = len(response.json()["items"])
    return samples, time.perf_counter() - start, page_items


async def read_plans(settings: Settings, population: Population) -> tuple[list[Plan], list[Plan]]:
    """Each searcher's custom and generic plan (see :mod:`loadtest.discovery_plan`)."""
    engine = make_engine(settings)
    custom, generic = [], []
    try:
        sessions = make_sessionmaker(engine)
        for searcher, user_id in zip(SEARCHERS, population.searcher_ids, strict=True):
            async with sessions() as session:
                lines = await custom_plan(session, settings, viewer_id=user_id)
                custom.append(summarize(searcher.name, searcher.radius_km, lines, "custom"))
            async with sessions() as session:
                lines = await generic_plan(session, settings, viewer_id=user_id)
                generic.append(summarize(searcher.name, searcher.radius_km, lines, "generic"))
    finally:
        await engine.dispose()
    return custom, generic


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def measure(
    api_url: str, settings: Settings, population: Population, *, requests: int, max_s: float
) -> DiscoveryReport:
    """Sign in, time ``requests`` discoveries (at most ``max_s`` seconds), read the plans."""
    async with httpx.AsyncClient(
        base_url=check_loopback(api_url), timeout=REQUEST_TIMEOUT_S
    ) as client:
        tokens = await sign_in(client, population)
        samples, wall, page_items = await time_requests(
            client, tokens, requests=requests, max_s=max_s
        )
    n = len(tokens)
    mine = [samples[i::n] for i in range(n)]
    custom, generic = await read_plans(settings, population)
    return DiscoveryReport(
        profiles=population.profiles,
        latency=Latency.of(samples),
        by_searcher=[Latency.of(one) for one in mine],
        samples_ms=[[ms(s) for s in one] for one in mine],
        requests_per_s=round(len(samples) / wall, 1) if wall > 0 else 0.0,
        wall_s=round(wall, 2),
        page_items=page_items,
        custom_plans=custom,
        generic_plans=generic,
    )
