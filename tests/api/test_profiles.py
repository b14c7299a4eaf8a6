"""``/api/profiles`` and ``/api/interests``: own profile, location cells, public view and blocks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.seed import INTERESTS, seed_interests
from api.services.ratelimit import hits
from common.geo import snap
from common.models import Block, Profile, User
from tests.api.auth_support import field_errors
from tests.api.conftest import UserFactory

PUBLIC_FIELDS = {
    "user_id",
    "display_name",
    "age",
    "gender",
    "bio",
    "interests",
    "photos",
    "distance",
}


@pytest.fixture(autouse=True)
async def _catalogue(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session, session.begin():
        await seed_interests(session)


async def test_interest_catalogue(api: httpx.AsyncClient, user_factory: UserFactory) -> None:
    user = await user_factory()
    response = await api.get("/api/interests", headers=user.headers)
    assert response.status_code == 200
    slugs = [i["slug"] for i in response.json()["interests"]]
    assert set(INTERESTS) <= set(slugs)  # other tests add their own tags
    assert (await api.get("/api/interests")).status_code == 401


async def test_own_profile_read_and_update(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    user = await user_factory(display_name="Ann", birth_date=dt.date(1990, 1, 1))
    mine = await api.get("/api/profiles/me", headers=user.headers)
    assert mine.status_code == 200
    body = mine.json()
    assert body["display_name"] == "Ann" and body["age"] >= 35
    assert "email" not in body and set(body["missing"]) == {"photo", "interests"}

    update_body = {
        "display_name": "  Annie ",
        "gender": "nonbinary",
        "bio": "Climbing on weekends.",
        "interests": ["climbing", "coffee", "travel"],
        "preferences": {"age_min": 25, "age_max": 40, "max_distance_km": 30, "genders": ["man"]},
    }
    changed = await api.patch("/api/profiles/me", json=update_body, headers=user.headers)
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["display_name"] == "Annie" and body["gender"] == "nonbinary"
    assert body["interests"] == ["climbing", "coffee", "travel"]
    assert body["preferences"] == {
        "age_min": 25,
        "age_max": 40,
        "max_distance_km": 30,
        "genders": ["man"],
    }
    # Interests are there; a photo is still missing, so the profile is not complete.
    assert body["missing"] == ["photo"] and body["is_complete"] is False
    # A partial update leaves everything else alone.
    again = await api.patch("/api/profiles/me", json={"bio": "New bio"}, headers=user.headers)
    assert again.json()["interests"] == ["climbing", "coffee", "travel"]
    assert again.json()["preferences"]["age_min"] == 25


async def test_profile_update_refusals_name_the_field(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    user = await user_factory()
    await api.patch("/api/profiles/me", json={"preferences": {"age_max": 30}}, headers=user.headers)
    cases: list[tuple[dict[str, Any], tuple[Any, ...]]] = [
        ({"bio": "x" * 501}, ("body", "bio")),
        ({"display_name": ""}, ("body", "display_name")),
        ({"gender": "robot"}, ("body", "gender")),
        ({"interests": ["hiking", "coffee"]}, ("body", "interests")),
        ({"interests": list(INTERESTS[:11])}, ("body", "interests")),
        ({"interests": ["hiking", "coffee", "knitting-with-cats"]}, ("body", "interests", 2)),
        ({"interests": ["hiking", "coffee", "hiking"]}, ("body", "interests")),
        ({"preferences": {"age_min": 17}}, ("body", "preferences", "age_min")),
        ({"preferences": {"age_max": 100}}, ("body", "preferences", "age_max")),
        ({"preferences": {"age_min": 40, "age_max": 30}}, ("body", "preferences")),
        ({"preferences": {"age_min": 31}}, ("body", "preferences", "age_min")),
        ({"preferences": {"max_distance_km": 0}}, ("body", "preferences", "max_distance_km")),
        ({"preferences": {"max_distance_km": 501}}, ("body", "preferences", "max_distance_km")),
        ({"preferences": {"genders": ["robot"]}}, ("body", "preferences", "genders", 0)),
        ({"preferences": {"genders": []}}, ("body", "preferences", "genders")),
        ({"birth_date": "2000-01-01"}, ("body", "birth_date")),
        ({"location": {"lat": 1, "lon": 2}}, ("body", "location")),
        ({"is_complete": True}, ("body", "is_complete")),
        ({"trust_score": 100}, ("body", "trust_score")),
    ]
    for change, loc in cases:
        response = await api.patch("/api/profiles/me", json=change, headers=user.headers)
        assert loc in field_errors(response), (change, response.text)
    assert (await api.patch("/api/profiles/me", json={"bio": "x"})).status_code == 401


async def test_user_without_profile_gets_404(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    user = await user_factory(profile=False)
    response = await api.get("/api/profiles/me", headers=user.headers)
    assert response.status_code == 404 and response.json()["code"] == "profile_not_found"
    response = await api.patch("/api/profiles/me", json={"bio": "x"}, headers=user.headers)
    assert response.status_code == 404


async def test_location_is_stored_as_a_cell_and_teleports_are_refused(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = await user_factory(location=None)
    exact = (48.85661, 2.35222)
    response = await api.put(
        "/api/profiles/me/location", json={"lat": exact[0], "lon": exact[1]}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    cell = snap(*exact)
    location = response.json()["location"]
    assert (location["lat"], location["lon"]) == pytest.approx(cell)
    async with sessions() as session:
        stored = await session.scalar(
            select(func.ST_AsText(Profile.location)).where(Profile.user_id == user.id)
        )
    assert stored is not None and str(exact[0]) not in stored
    lon, lat = (float(v) for v in stored.removeprefix("POINT(").rstrip(")").split())
    assert (lat, lon) == pytest.approx(cell)

    # A walk across town is fine; New York a minute later is not.
    nearby = await api.put(
        "/api/profiles/me/location", json={"lat": 48.87, "lon": 2.33}, headers=user.headers
    )
    assert nearby.status_code == 200
    new_york = {"lat": 40.7128, "lon": -74.006}
    jump = await api.put("/api/profiles/me/location", json=new_york, headers=user.headers)
    assert jump.status_code == 409 and jump.json()["code"] == "location_teleport"
    # Ten hours later the same flight is plausible.
    async with sessions() as session, session.begin():
        await session.execute(
            update(Profile)
            .where(Profile.user_id == user.id)
            .values(location_updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=10))
        )
    landed = await api.put("/api/profiles/me/location", json=new_york, headers=user.headers)
    assert landed.status_code == 200

    for body, loc in (
        ({"lat": 91, "lon": 0}, ("body", "lat")),
        ({"lat": 0, "lon": -181}, ("body", "lon")),
        ({"lat": 0}, ("body", "lon")),
        ({"lat": 0, "lon": 0, "user_id": 1}, ("body", "user_id")),
    ):
        response = await api.put("/api/profiles/me/location", json=body, headers=user.headers)
        assert loc in field_errors(response)


async def test_location_updates_are_rate_limited(
    api: httpx.AsyncClient, redis: Redis, user_factory: UserFactory
) -> None:
    user = await user_factory()
    for _ in range(60):
        await hits(redis, f"location:{user.id}", window_s=3600)
    response = await api.put(
        "/api/profiles/me/location", json={"lat": 48.85, "lon": 2.35}, headers=user.headers
    )
    assert response.status_code == 429 and "Retry-After" in response.headers


async def test_public_profile_shows_public_fields_and_a_distance_bucket(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    viewer = await user_factory(location=(48.8566, 2.3522))
    near_a = await user_factory(location=(48.8801, 2.3501), display_name="Near A")
    near_b = await user_factory(location=(48.8802, 2.3502), display_name="Near B")  # same cell
    response = await api.get(f"/api/profiles/{near_a.id}", headers=viewer.headers)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == PUBLIC_FIELDS
    assert body["display_name"] == "Near A" and body["distance"] == "2–5 km"
    other = (await api.get(f"/api/profiles/{near_b.id}", headers=viewer.headers)).json()
    assert other["distance"] == body["distance"]  # one cell: indistinguishable
    assert near_a.email not in response.text
    no_location = await user_factory(location=None)
    response = await api.get(f"/api/profiles/{no_location.id}", headers=viewer.headers)
    assert response.json()["distance"] is None
    assert (await api.get(f"/api/profiles/{near_a.id}")).status_code == 401
    invalid = await api.get("/api/profiles/abc", headers=viewer.headers)
    assert ("path", "user_id") in field_errors(invalid)


async def test_blocked_deleted_and_missing_profiles_answer_the_same_404(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    viewer = await user_factory()
    blocked, blocker, banned, gone = [await user_factory() for _ in range(4)]
    async with sessions() as session, session.begin():
        session.add(Block(blocker_id=viewer.id, blocked_id=blocked.id))
        session.add(Block(blocker_id=blocker.id, blocked_id=viewer.id))
        await session.execute(
            update(User)
            .where(User.id == banned.id)
            .values(banned_until=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        )
        await session.execute(
            update(User)
            .where(User.id == gone.id)
            .values(is_active=False, deleted_at=dt.datetime.now(dt.UTC))
        )
        missing_id = (await session.scalar(select(func.max(User.id))) or 0) + 1000
    missing = await api.get(f"/api/profiles/{missing_id}", headers=viewer.headers)
    assert missing.status_code == 404
    for target in (blocked, blocker, banned, gone):
        response = await api.get(f"/api/profiles/{target.id}", headers=viewer.headers)
        assert response.status_code == 404
        assert response.json() == missing.json()
    # Both directions: the blocked user cannot see the blocker either.
    response = await api.get(f"/api/profiles/{viewer.id}", headers=blocked.headers)
    assert response.status_code == 404 and response.json() == missing.json()
    assert (await api.get(f"/api/profiles/{viewer.id}", headers=viewer.headers)).status_code == 200
