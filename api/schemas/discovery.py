"""Wire models of discovery, and the opaque keyset cursor codec shared by every paged list.

A cursor is base64url JSON of the last row's sort key. It is opaque to clients (they echo it
back), but it is not a secret: a forged cursor can only move the caller's own window, so it
is validated for shape and never trusted for authorization.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Final

from pydantic import BaseModel

from api.errors import ApiError

DISCOVERY_PAGE_DEFAULT: Final = 20
DISCOVERY_PAGE_MAX: Final = 50
#: Longest cursor accepted from a client (a few numbers and a timestamp fit in well under it).
CURSOR_MAX_CHARS: Final = 200

CursorValue = int | float | str


class InvalidCursor(ApiError):
    status, code = 400, "invalid_cursor"


def encode_cursor(values: Sequence[CursorValue]) -> str:
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, types: Sequence[type]) -> list[CursorValue]:
    """The values of ``token``, checked one by one against ``types``; else ``invalid_cursor``."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor("cursor is not one this API issued") from exc
    if not isinstance(values, list) or len(values) != len(types):
        raise InvalidCursor("cursor is not one this API issued")
    for value, expected in zip(values, types, strict=True):
        # bool is an int subclass in Python; a cursor never holds one.
        if isinstance(value, bool) or not isinstance(value, expected):
            raise InvalidCursor("cursor is not one this API issued")
    return values


class Candidate(BaseModel):
    """One person in discovery: no exact distance, no last-seen time, no email."""

    user_id: int
    display_name: str
    age: int
    gender: str
    bio: str
    #: A distance bucket between coarse cells, e.g. "2–5 km"; never an exact figure.
    distance: str
    shared_interests: int
    photo_thumb: str | None


class DiscoveryPage(BaseModel):
    items: list[Candidate]
    #: Pass back as ``cursor`` for the next page; null when there is none.
    next_cursor: str | None
