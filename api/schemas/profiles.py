"""Models of ``/api/profiles`` and ``/api/interests``.

Own and public views are separate models: the public one has no email, no birth date, no
location (a distance bucket at most) and nothing about preferences. Location has its own input
model and route, so it cannot ride along a profile update.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.schemas.auth import DisplayName, Gender
from api.schemas.photos import PhotoOut

BIO_MAX = 500
INTERESTS_MIN, INTERESTS_MAX = 3, 10
AgeBound = Annotated[int, Field(ge=18, le=99)]
Slug = Annotated[str, Field(min_length=1, max_length=40)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PreferencesIn(_Input):
    age_min: AgeBound | None = None
    age_max: AgeBound | None = None
    max_distance_km: Annotated[int, Field(ge=1, le=500)] | None = None
    genders: Annotated[list[Gender], Field(min_length=1, max_length=3)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> PreferencesIn:
        if self.age_min is not None and self.age_max is not None and self.age_min > self.age_max:
            raise ValueError("age_min must not be above age_max")
        if self.genders is not None and len(set(self.genders)) != len(self.genders):
            raise ValueError("genders must not repeat")
        return self


class ProfileUpdate(_Input):
    """Only the fields given change; ``interests`` replaces the whole set."""

    display_name: DisplayName | None = None
    gender: Gender | None = None
    bio: Annotated[str, Field(max_length=BIO_MAX)] | None = None
    interests: (
        Annotated[list[Slug], Field(min_length=INTERESTS_MIN, max_length=INTERESTS_MAX)] | None
    ) = None
    preferences: PreferencesIn | None = None


class LocationIn(_Input):
    lat: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
    lon: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]


class Preferences(BaseModel):
    age_min: int
    age_max: int
    max_distance_km: int
    genders: list[str]


class CellLocation(BaseModel):
    """The centre of the ~1 km cell the profile is in (the exact point is never stored)."""

    lat: float
    lon: float
    updated_at: dt.datetime | None


class OwnProfile(BaseModel):
    user_id: int
    display_name: str
    birth_date: dt.date
    age: int
    gender: str
    bio: str
    interests: list[str]
    preferences: Preferences
    location: CellLocation | None
    photos: list[PhotoOut]
    is_complete: bool
    #: What still keeps the profile from being complete (``location``, ``photo``, ``interests``).
    missing: list[str]


class PublicProfile(BaseModel):
    user_id: int
    display_name: str
    age: int
    gender: str
    bio: str
    interests: list[str]
    photos: list[PhotoOut]
    #: A bucket between coarse cells such as "2–5 km"; None when either has no location.
    distance: str | None


class InterestOut(BaseModel):
    slug: str
    label: str


class InterestList(BaseModel):
    interests: list[InterestOut]
