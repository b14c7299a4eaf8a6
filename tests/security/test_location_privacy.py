"""Location privacy as properties, through the real API.

1. Two targets whose raw positions fall in one cell are indistinguishable in every output that
   shows location (public profile, discovery card), wherever the cell and the viewer are.
2. A trilateration attacker who moves their own location anywhere (set straight in the
   database: the teleport rule only slows such an attacker down, it cannot stop one who waits)
   and reads the distance bucket of the target's profile from every probe, finds the target's
   cell, and no better: since every position in the cell gives the same answers, its estimate
   is at least half a cell away from some position the target could really be at.

Hypothesis draws the cells and positions; each example is then run against the server (the
server shares this test's event loop, so the examples are drawn first and run after).
"""

from __future__ import annotations

import math
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.geo import CELL_DEG, ewkt, snap
from common.models import Profile
from tests.api.conftest import TestUser, UserFactory

EARTH_KM = 6371.0088
HALF_CELL_KM = CELL_DEG * 111.195 / 2  # ~0.556 km


def km_between(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine), enough at these scales."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_KM * math.asin(math.sqrt(h))


def moved(point: tuple[float, float], north_km: float, east_km: float) -> tuple[float, float]:
    lat = point[0] + math.degrees(north_km / EARTH_KM)
    lon = point[1] + math.degrees(east_km / (EARTH_KM * math.cos(math.radians(point[0]))))
    return lat, lon


def in_cell(cell: tuple[float, float], fy: float, fx: float) -> tuple[float, float]:
    """The point at fractions (fy, fx) of the way across ``cell`` (0..1 each way)."""
    lon_step = CELL_DEG / math.cos(math.radians(cell[0]))
    return cell[0] + (fy - 0.5) * CELL_DEG, cell[1] + (fx - 0.5) * lon_step


def cell_corners(cell: tuple[float, float]) -> list[tuple[float, float]]:
    return [in_cell(cell, fy, fx) for fy in (0.001, 0.999) for fx in (0.001, 0.999)]


def draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` examples of ``strategy``, drawn by hypothesis (deterministically)."""
    found: list[Any] = []

    @given(strategy)
    @settings(max_examples=count, database=None, derandomize=True, deadline=None)
    def collect(example: Any) -> None:
        found.append(example)

    collect()
    return found[-count:]


async def place(
    api: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    user: TestUser,
    point: tuple[float, float],
) -> None:
    """Set ``user``'s location through the API (a first location: no teleport rule applies)."""
    response = await api.put(
        "/api/profiles/me/location", json={"lat": point[0], "lon": point[1]}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    # No photo or interests in these fixtures: keep them listed in discovery regardless.
    async with sessions() as session, session.begin():
        await session.execute(
            update(Profile).where(Profile.user_id == user.id).values(is_complete=True)
        )


async def outputs(api: httpx.AsyncClient, viewer: TestUser, target: TestUser) -> dict[str, Any]:
    """Everything ``viewer`` sees of ``target`` that could depend on its location."""
    profile = (await api.get(f"/api/profiles/{target.id}", headers=viewer.headers)).json()
    page = (await api.get("/api/discovery?limit=50", headers=viewer.headers)).json()
    cards = [card for card in page["items"] if card["user_id"] == target.id]
    assert len(cards) == 1, page
    strip = {"user_id"}
    return {
        "profile": {k: v for k, v in profile.items() if k not in strip},
        "card": {k: v for k, v in cards[0].items() if k not in strip},
    }


places = st.tuples(
    st.floats(-55, 55),  # cell latitude
    st.floats(-170, 170),  # cell longitude
    st.tuples(st.floats(0.01, 0.99), st.floats(0.01, 0.99)),  # first target in the cell
    st.tuples(st.floats(0.01, 0.99), st.floats(0.01, 0.99)),  # second target in the cell
    st.floats(0.0, 40.0),  # viewer's distance, km
    st.floats(0.0, 2 * math.pi),  # viewer's bearing
)


async def test_two_targets_in_one_cell_look_the_same_everywhere(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    for lat, lon, first, second, distance, bearing in draw(places, 4):
        cell = snap(lat, lon)
        spots = [in_cell(cell, *first), in_cell(cell, *second)]
        assert snap(*spots[0]) == snap(*spots[1]) == cell
        viewer_at = moved(cell, distance * math.cos(bearing), distance * math.sin(bearing))
        viewer = await user_factory(location=None)
        await place(api, sessions, viewer, viewer_at)
        twins = [await user_factory(location=None, display_name="Twin") for _ in spots]
        for twin, spot in zip(twins, spots, strict=True):
            await place(api, sessions, twin, spot)
        seen = [await outputs(api, viewer, twin) for twin in twins]
        assert seen[0] == seen[1], (cell, spots, viewer_at)


async def trilaterate(
    api: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    attacker: TestUser,
    target: TestUser,
    start: tuple[float, float],
) -> tuple[tuple[float, float], int]:
    """The attacker's best estimate of ``target``'s position, and the probes it cost.

    A grid of probes around a starting guess; the target is within 2 km of every probe that
    reads "<2 km". The estimate is the centre of those probes (the disc they fill is centred
    on what the server measures from), refined once with a finer grid around it.
    """
    probes = 0
    guess = start
    for step_km, half_span in ((1.0, 2), (0.5, 4)):
        near: list[tuple[float, float]] = []
        for i in range(-half_span, half_span + 1):
            for j in range(-half_span, half_span + 1):
                spot = moved(guess, i * step_km, j * step_km)
                async with sessions() as session, session.begin():
                    # Probes need no durability: skip the fsync, hundreds of them add up.
                    await session.execute(text("SET LOCAL synchronous_commit = off"))
                    await session.execute(
                        update(Profile)
                        .where(Profile.user_id == attacker.id)
                        .values(location=ewkt(*spot))
                    )
                response = await api.get(f"/api/profiles/{target.id}", headers=attacker.headers)
                probes += 1
                if response.json()["distance"] == "<2 km":
                    near.append(spot)
        assert near, "the attacker lost the target"
        guess = (
            sum(p[0] for p in near) / len(near),
            sum(p[1] for p in near) / len(near),
        )
    return guess, probes


async def test_a_trilateration_attacker_learns_the_cell_and_no_more(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    targets = st.tuples(
        st.floats(-55, 55), st.floats(-170, 170), st.floats(0.01, 0.99), st.floats(0.01, 0.99)
    )
    for lat, lon, fy, fx in draw(targets, 2):
        cell = snap(lat, lon)
        truth = in_cell(cell, fy, fx)
        target = await user_factory(location=None)
        await place(api, sessions, target, truth)
        attacker = await user_factory(location=None)
        await place(api, sessions, attacker, moved(truth, 1.5, -1.0))  # it knows the area
        estimate, probes = await trilaterate(api, sessions, attacker, target, moved(truth, 1, 1))

        # The attacker is no straw man: it finds the target's cell centre quite precisely...
        assert km_between(estimate, cell) < 0.5, (estimate, cell, probes)
        # ...but every spot of that cell answers exactly alike (first test), so the target could
        # be at any corner: the estimate is at least half a cell from one of them.
        worst = max(km_between(estimate, corner) for corner in cell_corners(cell))
        assert worst >= HALF_CELL_KM, (estimate, cell, worst)
        # And with the real target moved to that corner, the same attack ends exactly alike.
        farthest = max(cell_corners(cell), key=lambda corner: km_between(estimate, corner))
        async with sessions() as session, session.begin():
            await session.execute(
                update(Profile).where(Profile.user_id == target.id).values(location=ewkt(*farthest))
            )
        again, _ = await trilaterate(api, sessions, attacker, target, moved(truth, 1, 1))
        assert again == estimate
