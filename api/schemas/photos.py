"""Models of ``/api/photos``: what a client sees of a photo (URLs, never a storage path)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MEDIA_PREFIX = "/api/media/"


class PhotoOut(BaseModel):
    id: int
    position: int
    is_primary: bool
    width: int
    height: int
    url: str
    thumb_url: str


class PhotoList(BaseModel):
    photos: list[PhotoOut]


class PhotoOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Every one of the caller's photo ids, once each, in the new order.
    photo_ids: Annotated[list[int], Field(min_length=1, max_length=20)]


def media_url(key: str) -> str:
    return MEDIA_PREFIX + key
