"""``/api/profiles``: the caller's own profile and location, and other users' public profiles."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import CurrentUser, RedisDep, SessionDep, SettingsDep
from api.schemas.matches import BIGINT_MAX
from api.schemas.profiles import LocationIn, OwnProfile, ProfileUpdate, PublicProfile
from api.services import profiles
from api.services.ratelimit import limit

router = APIRouter(prefix="/api/profiles", tags=["profiles"])

UserId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


@router.get("/me", response_model=OwnProfile)
async def get_my_profile(user: CurrentUser, session: SessionDep) -> OwnProfile:
    """Your own profile, with preferences, your location cell and what is still missing."""
    return await profiles.own_view(session, user_id=user.id)


@router.patch("/me", response_model=OwnProfile)
async def update_my_profile(
    data: ProfileUpdate, user: CurrentUser, session: SessionDep, redis: RedisDep
) -> OwnProfile:
    """Change the given fields of your profile; interests replace the whole set."""
    await profiles.update_profile(session, redis, user_id=user.id, data=data)
    await session.commit()
    return await profiles.own_view(session, user_id=user.id)


@router.put("/me/location", response_model=OwnProfile)
async def update_my_location(
    data: LocationIn,
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
) -> OwnProfile:
    """Set your location; only the surrounding ~1 km cell is stored and shown."""
    await limit(redis, f"location:{user.id}", max_hits=60, window_s=3600)
    await profiles.update_location(
        session, settings=settings, user_id=user.id, lat=data.lat, lon=data.lon
    )
    await session.commit()
    return await profiles.own_view(session, user_id=user.id)


@router.get("/{user_id}", response_model=PublicProfile)
async def get_profile(user_id: UserId, user: CurrentUser, session: SessionDep) -> PublicProfile:
    """Another user's public profile: no email, no location beyond a distance bucket."""
    return await profiles.public_view(session, viewer_id=user.id, target_id=user_id)
