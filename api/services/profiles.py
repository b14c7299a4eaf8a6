"""Profiles: own view and update, interests, location with the teleport rule, public view.

Owns the ``profiles`` and ``user_interests`` rows and the completeness flag. Location is stored
only as the coarse cell of :mod:`common.geo`; a move that would need travelling faster than
``max_travel_kmh`` since the last update (beyond a few cells of slack) is refused. Another
user's profile goes through :func:`public_view`, which applies the one block rule and answers a
blocked, banned, deleted or missing user with the same 404. Never returns an email or a point.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from fastapi.exceptions import RequestValidationError
from geoalchemy2 import Geometry
from sqlalchemy import cast, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import ScalarSelect

from api.errors import Conflict, NotFound
from api.schemas.auth import age_on
from api.schemas.profiles import (
    INTERESTS_MAX,
    INTERESTS_MIN,
    CellLocation,
    OwnProfile,
    Preferences,
    ProfileUpdate,
    PublicProfile,
)
from api.services import moderation
from api.services import photos as photo_service
from api.services.discovery import bucket_label, bucket_of
from api.services.relations import is_blocked_between
from common.geo import ewkt
from common.models import Interest, Profile, User, UserInterest
from common.redisclient import RedisClient
from common.settings import Settings

#: Moves shorter than this are always allowed (cell size, GPS jitter, a walk between updates).
TELEPORT_SLACK_KM: Final = 5.0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _field_error(loc: tuple[str | int, ...], message: str) -> RequestValidationError:
    """A 422 in the same shape as pydantic's, naming the field (for checks needing the DB)."""
    return RequestValidationError([{"loc": loc, "msg": message, "type": "value_error"}])


async def own_profile(session: AsyncSession, user_id: int, *, lock: bool = False) -> Profile:
    statement = select(Profile).where(Profile.user_id == user_id)
    profile = await session.scalar(statement.with_for_update() if lock else statement)
    if profile is None:
        raise NotFound("no profile yet", code="profile_not_found")
    return profile


async def catalogue(session: AsyncSession) -> list[Interest]:
    return list((await session.scalars(select(Interest).order_by(Interest.slug))).all())


async def interests_of(session: AsyncSession, user_id: int) -> list[str]:
    rows = await session.scalars(
        select(Interest.slug)
        .join(UserInterest, UserInterest.interest_id == Interest.id)
        .where(UserInterest.user_id == user_id)
        .order_by(Interest.slug)
    )
    return list(rows.all())


async def _set_interests(session: AsyncSession, user_id: int, slugs: list[str]) -> None:
    if len(set(slugs)) != len(slugs):
        raise _field_error(("body", "interests"), "interests must not repeat")
    rows = await session.execute(select(Interest.slug, Interest.id).where(Interest.slug.in_(slugs)))
    ids = {slug: interest_id for slug, interest_id in rows.all()}
    for index, slug in enumerate(slugs):
        if slug not in ids:
            raise _field_error(("body", "interests", index), f"unknown interest {slug!r}")
    await session.execute(delete(UserInterest).where(UserInterest.user_id == user_id))
    session.add_all(UserInterest(user_id=user_id, interest_id=ids[slug]) for slug in slugs)
    await session.flush()


def missing_parts(profile: Profile, *, photos: int, interests: int) -> list[str]:
    """What keeps a profile from being complete: basics, a location, a photo, 3–10 interests."""
    missing = []
    if not profile.display_name or not profile.gender:
        missing.append("basics")
    if profile.location is None:
        missing.append("location")
    if photos < 1:
        missing.append("photo")
    if not INTERESTS_MIN <= interests <= INTERESTS_MAX:
        missing.append("interests")
    return missing


async def refresh_completeness(session: AsyncSession, user_id: int) -> None:
    """Recompute ``profiles.is_complete`` after anything it depends on changed."""
    profile = await session.get(Profile, user_id)
    if profile is None:
        return
    await session.flush()
    photos = await photo_service.count_photos(session, user_id)
    interests = len(await interests_of(session, user_id))
    profile.is_complete = not missing_parts(profile, photos=photos, interests=interests)


async def update_profile(
    session: AsyncSession, redis: RedisClient, *, user_id: int, data: ProfileUpdate
) -> None:
    """Apply ``data``; the display name and bio pass the content filter first (a reject is 422
    ``content_rejected`` and changes nothing, a warn is logged and the change goes through)."""
    # Before the row lock: check_texts commits its log rows, which would release the lock.
    bio = data.bio.strip() if data.bio is not None else None
    await moderation.check_texts(
        session, redis, user_id=user_id, texts={"display_name": data.display_name, "bio": bio}
    )
    profile = await own_profile(session, user_id, lock=True)
    if data.display_name is not None:
        profile.display_name = data.display_name
    if data.gender is not None:
        profile.gender = data.gender
    if bio is not None:
        profile.bio = bio
    if data.interests is not None:
        await _set_interests(session, user_id, data.interests)
    prefs = data.preferences
    if prefs is not None:
        age_min = prefs.age_min if prefs.age_min is not None else profile.pref_age_min
        age_max = prefs.age_max if prefs.age_max is not None else profile.pref_age_max
        if age_min > age_max:
            field = "age_min" if prefs.age_min is not None else "age_max"
            raise _field_error(("body", "preferences", field), "age_min must not be above age_max")
        profile.pref_age_min, profile.pref_age_max = age_min, age_max
        if prefs.max_distance_km is not None:
            profile.pref_max_distance_km = prefs.max_distance_km
        if prefs.genders is not None:
            profile.pref_genders = list(prefs.genders)
    profile.updated_at = _now()
    await refresh_completeness(session, user_id)


async def update_location(
    session: AsyncSession, *, settings: Settings, user_id: int, lat: float, lon: float
) -> None:
    """Store the cell of (lat, lon); refuse with 409 ``location_teleport`` an impossible move."""
    profile = await own_profile(session, user_id, lock=True)
    new_point = ewkt(lat, lon)
    now = _now()
    if profile.location is not None and profile.location_updated_at is not None:
        metres = await session.scalar(
            select(func.ST_Distance(Profile.location, func.ST_GeogFromText(new_point))).where(
                Profile.user_id == user_id
            )
        )
        hours = max((now - profile.location_updated_at).total_seconds(), 0.0) / 3600
        allowed_km = TELEPORT_SLACK_KM + settings.max_travel_kmh * hours
        if metres is not None and metres / 1000 > allowed_km:
            raise Conflict(
                "location moved faster than travel allows; try again later",
                code="location_teleport",
            )
    profile.location = new_point  # type: ignore[assignment]  # geoalchemy2 binds EWKT text
    profile.location_updated_at = now
    await refresh_completeness(session, user_id)


async def _cell(session: AsyncSession, user_id: int) -> tuple[float, float] | None:
    point = cast(Profile.location, Geometry)
    row = (
        await session.execute(
            select(func.ST_Y(point), func.ST_X(point)).where(
                Profile.user_id == user_id, Profile.location.is_not(None)
            )
        )
    ).first()
    return None if row is None else (float(row[0]), float(row[1]))


async def own_view(session: AsyncSession, *, user_id: int) -> OwnProfile:
    profile = await own_profile(session, user_id)
    photos = await photo_service.list_photos(session, user_id)
    interests = await interests_of(session, user_id)
    cell = await _cell(session, user_id)
    return OwnProfile(
        user_id=user_id,
        display_name=profile.display_name,
        birth_date=profile.birth_date,
        age=age_on(profile.birth_date, _now().date()),
        gender=profile.gender,
        bio=profile.bio,
        interests=interests,
        preferences=Preferences(
            age_min=profile.pref_age_min,
            age_max=profile.pref_age_max,
            max_distance_km=profile.pref_max_distance_km,
            genders=list(profile.pref_genders),
        ),
        location=None
        if cell is None
        else CellLocation(lat=cell[0], lon=cell[1], updated_at=profile.location_updated_at),
        photos=[photo_service.to_out(p) for p in photos],
        is_complete=profile.is_complete,
        missing=missing_parts(profile, photos=len(photos), interests=len(interests)),
    )


def _location_of(user_id: int) -> ScalarSelect[Any]:
    return select(Profile.location).where(Profile.user_id == user_id).scalar_subquery()


async def public_view(session: AsyncSession, *, viewer_id: int, target_id: int) -> PublicProfile:
    """Another user's public fields; 404 (the same for every reason) when not visible."""
    not_found = NotFound("profile not found")
    row = (
        await session.execute(
            select(Profile, User)
            .join(User, User.id == Profile.user_id)
            .where(Profile.user_id == target_id)
        )
    ).first()
    if row is None:
        raise not_found
    profile, user = row
    now = _now()
    hidden = (
        not user.is_active
        or user.deleted_at is not None
        or (user.banned_until is not None and user.banned_until > now)
    )
    if hidden or (
        viewer_id != target_id and await is_blocked_between(session, viewer_id, target_id)
    ):
        raise not_found
    metres = await session.scalar(
        select(func.ST_Distance(_location_of(viewer_id), _location_of(target_id)))
    )
    photos = await photo_service.list_photos(session, target_id)
    return PublicProfile(
        user_id=target_id,
        display_name=profile.display_name,
        age=age_on(profile.birth_date, now.date()),
        gender=profile.gender,
        bio=profile.bio,
        interests=await interests_of(session, target_id),
        photos=[photo_service.to_out(p) for p in photos],
        distance=None if metres is None else bucket_label(bucket_of(metres / 1000)),
    )
