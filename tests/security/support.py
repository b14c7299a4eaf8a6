"""Helpers of the security suite: an image to upload, and the victim's objects (``victim``).

The fixture that makes them is in ``tests/security/conftest.py``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from tests.api.support import TestUser


def jpeg_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (20, 120, 200)).save(out, format="JPEG")
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class Victim:
    """User A and an id of each kind of A's objects; ``friend`` is A's match, ``blocked`` the
    user A blocked."""

    user: TestUser
    friend: TestUser
    blocked: TestUser
    photo_id: int
    photo_key: str
    match_id: int
    cid: int
    notification_id: int
    report_id: int
