"""Discovery against seeded users at known coordinates, through the real API on a real socket.

Each test works in its own area (``area(n)``), hundreds of km from every other test's users and
from the default location other suites use, so tests never see each other's people.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
from typing import Any

import httpx
from sqlalchemy import Date, cast, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.discovery import (
    DISTANCE_EDGES_KM,
    age_years,
    born_for_ages,
    bucket_label,
    bucket_of,
    explain,
    quantized_radius_km,
)
from common.geo import ewkt, snap
from common.models import Block, Conversation, Interest, Match, Profile, Swipe, User, UserInterest
from common.settings import Settings
from tests.api.conftest import TestUser, UserFactory
from tests.api.test_matches import count_statements

_slugs = itertools.count(1)


def area(n: int) -> tuple[float, float]:
    """The centre of test area ``n``: 8° of latitude (~890 km) apart, far from Paris."""
    return (-62.0 + 8.0 * n, 150.0)


def offset(
    base: tuple[float, float], north_km: float = 0.0, east_km: float = 0.0
) -> tuple[float, float]:
    lat, lon = base
    return (lat + north_km / 111.32, lon + east_km / (111.32 * math.cos(math.radians(lat))))


def born(age: int) -> dt.date:
    return dt.date(dt.date.today().year - age, 1, 1)


async def set_profile(
    sessions: async_sessionmaker[AsyncSession], user_id: int, **values: Any
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(update(Profile).where(Profile.user_id == user_id).values(**values))


async def set_user(sessions: async_sessionmaker[AsyncSession], user_id: int, **values: Any) -> None:
    async with sessions() as session, session.begin():
        await session.execute(update(User).where(User.id == user_id).values(**values))


async def discover(api: httpx.AsyncClient, viewer: TestUser, **params: Any) -> dict[str, Any]:
    response = await api.get("/api/discovery", params=params, headers=viewer.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def ids(api: httpx.AsyncClient, viewer: TestUser) -> list[int]:
    body = await discover(api, viewer, limit=50)
    assert body["next_cursor"] is None
    return [item["user_id"] for item in body["items"]]


async def interests(sessions: async_sessionmaker[AsyncSession], count: int) -> list[int]:
    async with sessions() as session, session.begin():
        rows = await session.execute(
            insert(Interest)
            .values([{"slug": f"t-disc-{next(_slugs)}", "label": "test"} for _ in range(count)])
            .returning(Interest.id)
        )
        return list(rows.scalars())


async def give_interests(
    sessions: async_sessionmaker[AsyncSession], user_id: int, interest_ids: list[int]
) -> None:
    if not interest_ids:
        return
    async with sessions() as session, session.begin():
        await session.execute(
            insert(UserInterest),
            [{"user_id": user_id, "interest_id": i} for i in interest_ids],
        )


# --- pure logic -----------------------------------------------------------------------------


def test_buckets_and_quantized_radius() -> None:
    assert [bucket_label(bucket_of(km)) for km in (0, 1.99, 2, 4.9, 7, 30, 499, 600)] == [
        "<2 km",
        "<2 km",
        "2–5 km",
        "2–5 km",
        "5–10 km",
        "25–50 km",
        "250–500 km",
        ">500 km",
    ]
    # The radius filter only moves at bucket edges.
    assert [quantized_radius_km(km) for km in (1, 2, 3, 5, 6, 49, 50, 51, 500)] == [
        2,
        2,
        5,
        5,
        10,
        50,
        50,
        100,
        500,
    ]
    assert DISTANCE_EDGES_KM[-1] == 500  # the profile's largest allowed max distance


# --- against the real API -------------------------------------------------------------------


async def test_distance_filter_and_buckets(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    base = area(0)
    viewer = await user_factory(location=base)
    placed = {
        "<2 km": await user_factory(location=offset(base, 0.2, 0.1)),
        "2–5 km": await user_factory(location=offset(base, 3.5)),
        "5–10 km": await user_factory(location=offset(base, 0, 7.5)),
        "10–25 km": await user_factory(location=offset(base, -17)),
        "25–50 km": await user_factory(location=offset(base, 0, -37)),
    }
    far = [
        await user_factory(location=offset(base, 60)),
        await user_factory(location=offset(base, 0, 120)),
    ]
    body = await discover(api, viewer, limit=50)
    shown = {item["user_id"]: item["distance"] for item in body["items"]}
    assert shown == {user.id: label for label, user in placed.items()}
    assert not {user.id for user in far} & set(shown)

    # A 3 km preference is rounded up to the 5 km edge: the filter moves only at bucket edges.
    await set_profile(sessions, viewer.id, pref_max_distance_km=3)
    near = set(await ids(api, viewer))
    assert near == {placed["<2 km"].id, placed["2–5 km"].id}
    await set_profile(sessions, viewer.id, pref_max_distance_km=5)
    assert set(await ids(api, viewer)) == near
    await set_profile(sessions, viewer.id, pref_max_distance_km=100)
    assert {user.id for user in far[:1]} <= set(await ids(api, viewer))


async def test_preferences_apply_both_ways(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    base = area(1)
    viewer = await user_factory(location=base, gender="woman", wants=("man",), birth_date=born(30))
    await set_profile(sessions, viewer.id, pref_age_min=25, pref_age_max=35)

    fits = await user_factory(location=base, gender="man", wants=("woman",), birth_date=born(32))
    wants_men_only = await user_factory(
        location=base, gender="man", wants=("man",), birth_date=born(32)
    )
    not_wanted_gender = await user_factory(
        location=base, gender="nonbinary", wants=("woman",), birth_date=born(32)
    )
    too_old = await user_factory(location=base, gender="man", wants=("woman",), birth_date=born(40))
    viewer_too_old_for_him = await user_factory(
        location=base, gender="man", wants=("woman",), birth_date=born(26)
    )
    await set_profile(sessions, viewer_too_old_for_him.id, pref_age_min=18, pref_age_max=27)
    edge_age = await user_factory(
        location=base, gender="man", wants=("woman",), birth_date=born(35)
    )

    shown = set(await ids(api, viewer))
    assert shown == {fits.id, edge_age.id}
    for excluded in (wants_men_only, not_wanted_gender, too_old, viewer_too_old_for_him):
        assert excluded.id not in shown
    # And symmetrically: the fitting man sees the viewer, the one she is too old for does not.
    assert viewer.id in await ids(api, fits)
    assert viewer.id not in await ids(api, viewer_too_old_for_him)


async def test_every_exclusion(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    base = area(2)
    viewer = await user_factory(location=base)
    kept = await user_factory(location=base)
    old_pass = await user_factory(location=base)
    expired_ban = await user_factory(location=base)
    liked = await user_factory(location=base)
    passed = await user_factory(location=base)
    matched = await user_factory(location=base)
    unmatched = await user_factory(location=base)
    blocked_by_viewer = await user_factory(location=base)
    blocked_viewer = await user_factory(location=base)
    banned = await user_factory(location=base)
    inactive = await user_factory(location=base)
    deleted = await user_factory(location=base)
    incomplete = await user_factory(location=base)
    no_location = await user_factory(location=None)
    no_profile = await user_factory(location=base, profile=False)

    now = dt.datetime.now(dt.UTC)
    async with sessions() as session, session.begin():
        session.add_all(
            [
                Swipe(swiper_id=viewer.id, target_id=liked.id, kind="like"),
                Swipe(swiper_id=viewer.id, target_id=passed.id, kind="pass"),
                Swipe(
                    swiper_id=viewer.id,
                    target_id=old_pass.id,
                    kind="pass",
                    created_at=now - dt.timedelta(days=2),
                ),
                Block(blocker_id=viewer.id, blocked_id=blocked_by_viewer.id),
                Block(blocker_id=blocked_viewer.id, blocked_id=viewer.id),
            ]
        )
        for other, unmatched_at in ((matched, None), (unmatched, now)):
            low, high = sorted((viewer.id, other.id))
            conversation_id = await _conversation(session)
            session.add(
                Match(
                    user_low_id=low,
                    user_high_id=high,
                    conversation_id=conversation_id,
                    unmatched_at=unmatched_at,
                )
            )
    await set_user(sessions, banned.id, banned_until=now + dt.timedelta(days=1))
    await set_user(sessions, expired_ban.id, banned_until=now - dt.timedelta(days=1))
    await set_user(sessions, inactive.id, is_active=False)
    await set_user(sessions, deleted.id, deleted_at=now)
    await set_profile(sessions, incomplete.id, is_complete=False)

    shown = set(await ids(api, viewer))
    assert shown == {kept.id, old_pass.id, expired_ban.id}
    assert viewer.id not in shown
    for hidden in (no_location, no_profile, blocked_by_viewer, blocked_viewer):
        assert hidden.id not in shown
    # Blocks hide both ways: neither blocked party sees the viewer either.
    assert viewer.id not in await ids(api, blocked_by_viewer)
    assert viewer.id not in await ids(api, blocked_viewer)


async def _conversation(session: AsyncSession) -> int:
    conversation = Conversation()
    session.add(conversation)
    await session.flush()
    return conversation.id


async def test_ranking_order(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    base = area(3)
    viewer = await user_factory(location=base)
    tags = await interests(sessions, 4)
    await give_interests(sessions, viewer.id, tags)

    three_shared = await user_factory(location=offset(base, 20))  # far bucket, many interests
    one_shared = await user_factory(location=base)
    near = await user_factory(location=base)
    far = await user_factory(location=offset(base, 20))
    idle = await user_factory(location=base)
    trusted = await user_factory(location=base)
    await give_interests(sessions, three_shared.id, tags[:3])
    await give_interests(sessions, one_shared.id, tags[:1])
    await set_user(
        sessions, idle.id, last_active_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    )
    await set_user(sessions, trusted.id, trust_score=100)

    order = await ids(api, viewer)
    assert order == [three_shared.id, one_shared.id, trusted.id, near.id, far.id, idle.id]

    # Weights are settings: with interests weighing nothing, distance leads.
    saved = settings.rank_weight_interests
    settings.rank_weight_interests = 0.0
    try:
        order = await ids(api, viewer)
    finally:
        settings.rank_weight_interests = saved
    assert order.index(near.id) < order.index(three_shared.id)


async def test_pagination_has_no_duplicates_or_gaps(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    base = area(4)
    viewer = await user_factory(location=base)
    rng = random.Random(4)
    people = [
        await user_factory(location=offset(base, rng.uniform(-30, 30), rng.uniform(-30, 30)))
        for _ in range(23)
    ]
    for person in people[::3]:
        await set_user(sessions, person.id, trust_score=rng.randint(0, 100))

    with count_statements() as one_row:
        assert len((await discover(api, viewer, limit=1))["items"]) == 1
    with count_statements() as all_rows:
        full = await ids(api, viewer)
    assert sorted(full) == sorted(person.id for person in people)
    assert 0 < len(one_row) == len(all_rows)  # no query per row

    paged: list[int] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 5}
        if cursor:
            params["cursor"] = cursor
        body = await discover(api, viewer, **params)
        paged += [item["user_id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert paged == full

    bad = await api.get("/api/discovery", params={"cursor": "nonsense!"}, headers=viewer.headers)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"
    too_big = await api.get("/api/discovery", params={"limit": 51}, headers=viewer.headers)
    assert too_big.status_code == 422


async def test_same_cell_is_indistinguishable(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    base = area(5)
    cell = snap(*offset(base, 6, 3))
    # Two raw positions inside one cell, ~300 m apart.
    first_spot = (cell[0] - 0.003, cell[1] - 0.003)
    second_spot = (cell[0] + 0.003, cell[1] + 0.003)
    assert snap(*first_spot) == snap(*second_spot) == cell
    viewer = await user_factory(location=base)
    twins = [
        await user_factory(location=spot, display_name="Twin", birth_date=born(29))
        for spot in (first_spot, second_spot)
    ]
    body = await discover(api, viewer, limit=50)
    cards = [item for item in body["items"] if item["user_id"] in {t.id for t in twins}]
    assert len(cards) == 2
    first, second = ({k: v for k, v in card.items() if k != "user_id"} for card in cards)
    assert first == second
    assert cards[0]["distance"] == bucket_label(bucket_of(6.7))

    # The viewer moving inside their own cell changes nothing either.
    viewer_cell = snap(*base)
    await set_profile(
        sessions, viewer.id, location=ewkt(viewer_cell[0] + 0.004, viewer_cell[1] - 0.004)
    )
    assert (await discover(api, viewer, limit=50))["items"] == body["items"]


async def test_viewer_without_location_is_refused(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    viewer = await user_factory(location=None)
    response = await api.get("/api/discovery", headers=viewer.headers)
    assert response.status_code == 409
    assert response.json()["code"] == "profile_incomplete"
    assert (await api.get("/api/discovery")).status_code == 401


async def test_the_birth_date_range_selects_the_same_ages_as_the_age_test(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Every birth date of the last 70 years, leap days and birthdays today included."""
    days = select(
        cast(
            func.generate_series(
                func.current_date() - func.make_interval(70),
                func.current_date(),
                dt.timedelta(days=1),
            ),
            Date,
        ).label("day")
    ).subquery("days")
    day = days.c.day
    async with sessions() as session:
        for youngest, oldest in ((18, 30), (25, 25), (18, 60)):
            ranged = born_for_ages(day, youngest, oldest)
            by_age = age_years(day).between(youngest, oldest)
            counts = (
                await session.execute(
                    select(
                        func.count().filter(ranged.is_distinct_from(by_age)),
                        func.count().filter(by_age),
                    ).select_from(days)
                )
            ).one()
            assert counts[0] == 0, (youngest, oldest)
            assert counts[1] >= 365 * (oldest - youngest + 1) - 1


async def test_api_sessions_run_without_jit(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        assert (await session.execute(text("SHOW jit"))).scalar_one() == "off"


async def test_query_plan_uses_the_gist_index(
    user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """On a realistic population (thousands of profiles spread over a continent), no seqscan."""
    rng = random.Random(6)
    centre = area(6)
    async with sessions() as session, session.begin():
        user_ids = (
            await session.execute(
                insert(User)
                .values(
                    [
                        {"email": f"seed-{rng.random()}@plan.test", "password_hash": "x"}
                        for _ in range(4000)
                    ]
                )
                .returning(User.id)
            )
        ).scalars()
        await session.execute(
            insert(Profile),
            [
                {
                    "user_id": user_id,
                    "display_name": "Seed",
                    "birth_date": born(rng.randint(18, 60)),
                    "gender": rng.choice(("woman", "man", "nonbinary")),
                    "location": ewkt(
                        centre[0] + rng.uniform(-3.5, 3.5), centre[1] + rng.uniform(-10, 10)
                    ),
                    "is_complete": True,
                }
                for user_id in user_ids
            ],
        )
    async with sessions() as session:
        await session.execute(text("ANALYZE users, profiles"))
        await session.commit()
    viewer = await user_factory(location=centre)
    async with sessions() as session:
        plan = "\n".join(await explain(session, settings, viewer_id=viewer.id))
    assert "ix_profiles_location" in plan, plan
    assert "Seq Scan on profiles" not in plan, plan
