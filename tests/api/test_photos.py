"""``/api/photos`` and ``/api/media``: checked uploads, metadata stripped, order, primary, authz.

Ends with the object-level authorization matrix of this issue's routes: user B's token against
each of user A's objects answers exactly like a missing object and changes nothing of A's.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from typing import Any

import httpx
import pytest
from PIL import ExifTags, Image
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.seed import seed_interests
from api.services.storage import media_dir
from common.models import Block, Photo
from common.settings import Settings
from tests.api.auth_support import bearer, field_errors, login
from tests.api.conftest import TEST_PASSWORD, UserFactory

GPS = ExifTags.IFD.GPSInfo


@pytest.fixture(autouse=True)
async def _catalogue(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session, session.begin():
        await seed_interests(session)


def image_bytes(fmt: str, size: tuple[int, int] = (64, 48), *, gps: bool = False) -> bytes:
    mode = "RGBA" if fmt == "PNG" else "RGB"
    image = Image.new(mode, size, (200, 30, 90, 128) if mode == "RGBA" else (200, 30, 90))
    out = io.BytesIO()
    if gps:
        exif = image.getexif()
        exif[ExifTags.Base.Make] = "SpyCam"
        gps_ifd = exif.get_ifd(GPS)
        gps_ifd[ExifTags.GPS.GPSLatitudeRef] = "N"
        gps_ifd[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 24.0)
        gps_ifd[ExifTags.GPS.GPSLongitudeRef] = "E"
        gps_ifd[ExifTags.GPS.GPSLongitude] = (2.0, 21.0, 8.0)
        image.save(out, format=fmt, exif=exif)
    else:
        image.save(out, format=fmt)
    return out.getvalue()


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit PNG of width x height black pixels: ~50 KB that decodes to ~400 MB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


async def upload(
    api: httpx.AsyncClient, headers: dict[str, str], data: bytes, name: str = "p.jpg"
) -> httpx.Response:
    return await api.post(
        "/api/photos", files={"file": (name, data, "application/octet-stream")}, headers=headers
    )


def stored_path(settings: Settings, key: str) -> Any:
    return media_dir(settings) / key[:2] / key


async def test_jpeg_with_gps_exif_is_stored_without_it(
    api: httpx.AsyncClient, settings: Settings, user_factory: UserFactory
) -> None:
    user = await user_factory()
    original = image_bytes("JPEG", (2400, 1800), gps=True)
    with Image.open(io.BytesIO(original)) as check:  # the fixture really carries GPS
        assert check.getexif().get_ifd(GPS)
    response = await upload(api, user.headers, original)
    assert response.status_code == 201, response.text
    photo = response.json()
    assert (photo["width"], photo["height"]) == (1200, 900)
    assert photo["is_primary"] is True and photo["position"] == 0

    fetched = await api.get(photo["url"], headers=user.headers)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/jpeg"
    for data in (
        fetched.content,
        stored_path(settings, photo["url"].rsplit("/", 1)[1]).read_bytes(),
    ):
        with Image.open(io.BytesIO(data)) as stored:
            assert stored.format == "JPEG"
            assert len(stored.getexif()) == 0 and not stored.getexif().get_ifd(GPS)
            assert "exif" not in stored.info
        assert b"Exif" not in data and b"SpyCam" not in data
    thumb = await api.get(photo["thumb_url"], headers=user.headers)
    with Image.open(io.BytesIO(thumb.content)) as small:
        assert max(small.size) <= settings.photo_thumb_side


async def test_png_and_webp_are_accepted_and_reencoded(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    user = await user_factory()
    for fmt in ("PNG", "WEBP"):
        response = await upload(api, user.headers, image_bytes(fmt, (300, 200)), name="x.bin")
        assert response.status_code == 201, response.text
        assert (response.json()["width"], response.json()["height"]) == (300, 200)
        fetched = await api.get(response.json()["url"], headers=user.headers)
        with Image.open(io.BytesIO(fetched.content)) as stored:
            assert stored.format == "JPEG" and stored.mode == "RGB"


async def test_bad_uploads_are_refused_with_codes(
    api: httpx.AsyncClient, settings: Settings, user_factory: UserFactory
) -> None:
    user = await user_factory()
    bomb = await upload(api, user.headers, png_bomb(), name="bomb.png")
    assert bomb.status_code == 422 and bomb.json()["code"] == "image_too_many_pixels"

    gif = io.BytesIO()
    Image.new("RGB", (10, 10)).save(gif, format="GIF")
    for data, code in (
        (b"this is not an image at all", "image_unsupported"),
        (gif.getvalue(), "image_unsupported"),
        (image_bytes("JPEG", (400, 300))[:300], "image_invalid"),
    ):
        response = await upload(api, user.headers, data)
        assert response.status_code == 422 and response.json()["code"] == code, response.text

    just_over = await upload(api, user.headers, os.urandom(settings.photo_max_bytes + 1))
    assert just_over.status_code == 413 and just_over.json()["code"] == "photo_too_large"
    way_over = await upload(api, user.headers, os.urandom(settings.photo_max_bytes + 100_000))
    assert way_over.status_code == 413

    no_file = await api.post("/api/photos", data={"other": "x"}, headers=user.headers)
    assert ("body", "file") in field_errors(no_file)
    not_multipart = await api.post("/api/photos", content=b"raw", headers=user.headers)
    assert ("body", "file") in field_errors(not_multipart)
    assert (await upload(api, {}, image_bytes("JPEG"))).status_code == 401
    listing = await api.get("/api/photos", headers=user.headers)
    assert listing.json()["photos"] == []


async def test_photo_limit_order_primary_delete_and_completeness(
    api: httpx.AsyncClient, settings: Settings, user_factory: UserFactory
) -> None:
    user = await user_factory()
    interests = {"interests": ["hiking", "music", "art"]}
    body = (await api.patch("/api/profiles/me", json=interests, headers=user.headers)).json()
    assert body["is_complete"] is False and body["missing"] == ["photo"]

    ids = []
    for _ in range(settings.photo_max_count):
        response = await upload(api, user.headers, image_bytes("JPEG"))
        assert response.status_code == 201
        ids.append(response.json()["id"])
    me = (await api.get("/api/profiles/me", headers=user.headers)).json()
    assert me["is_complete"] is True and [p["id"] for p in me["photos"]] == ids
    extra = await upload(api, user.headers, image_bytes("JPEG"))
    assert extra.status_code == 409 and extra.json()["code"] == "photo_limit"

    reordered = await api.put(
        "/api/photos/order", json={"photo_ids": ids[::-1]}, headers=user.headers
    )
    assert reordered.status_code == 200
    assert [(p["id"], p["position"]) for p in reordered.json()["photos"]] == [
        (pid, n) for n, pid in enumerate(ids[::-1])
    ]
    for bad in (ids[:-1], [*ids[:-1], ids[0]]):
        response = await api.put("/api/photos/order", json={"photo_ids": bad}, headers=user.headers)
        assert response.status_code == 422 and response.json()["code"] == "photo_order_invalid"
    assert ("body", "photo_ids") in field_errors(
        await api.put("/api/photos/order", json={"photo_ids": []}, headers=user.headers)
    )

    primary = await api.post(f"/api/photos/{ids[3]}/primary", headers=user.headers)
    assert primary.status_code == 200
    assert [p["id"] for p in primary.json()["photos"] if p["is_primary"]] == [ids[3]]

    first = await api.get("/api/photos", headers=user.headers)
    gone = next(p for p in first.json()["photos"] if p["id"] == ids[3])
    assert (await api.delete(f"/api/photos/{ids[3]}", headers=user.headers)).status_code == 204
    assert (await api.delete(f"/api/photos/{ids[3]}", headers=user.headers)).status_code == 404
    for url in (gone["url"], gone["thumb_url"]):
        assert (await api.get(url, headers=user.headers)).status_code == 404
        assert not stored_path(settings, url.rsplit("/", 1)[1]).exists()
    rest = (await api.get("/api/photos", headers=user.headers)).json()["photos"]
    assert [p["position"] for p in rest] == list(range(len(rest)))
    assert sum(p["is_primary"] for p in rest) == 1

    for photo in rest:
        assert (
            await api.delete(f"/api/photos/{photo['id']}", headers=user.headers)
        ).status_code == 204
    me = (await api.get("/api/profiles/me", headers=user.headers)).json()
    assert me["is_complete"] is False and me["missing"] == ["photo"]


async def test_media_follows_the_block_rule(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    owner, viewer = await user_factory(), await user_factory()
    photo = (await upload(api, owner.headers, image_bytes("JPEG"))).json()
    assert (await api.get(photo["url"], headers=viewer.headers)).status_code == 200
    assert (await api.get(photo["url"])).status_code == 401
    assert (await api.get("/api/media/../../etc/passwd", headers=viewer.headers)).status_code == 404
    assert (await api.get("/api/media/" + "A" * 32, headers=viewer.headers)).status_code == 404
    async with sessions() as session, session.begin():
        session.add(Block(blocker_id=viewer.id, blocked_id=owner.id))
    for url in (photo["url"], photo["thumb_url"]):
        assert (await api.get(url, headers=viewer.headers)).status_code == 404
        assert (await api.get(url, headers=owner.headers)).status_code == 200


async def test_account_deletion_removes_photo_files(
    api: httpx.AsyncClient,
    settings: Settings,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = await user_factory()
    photo = (await upload(api, user.headers, image_bytes("JPEG"))).json()
    keys = [photo["url"].rsplit("/", 1)[1], photo["thumb_url"].rsplit("/", 1)[1]]
    assert all(stored_path(settings, k).exists() for k in keys)
    response = await api.request(
        "DELETE", "/api/auth/me", json={"password": TEST_PASSWORD}, headers=user.headers
    )
    assert response.status_code == 204
    assert not any(stored_path(settings, k).exists() for k in keys)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).where(Photo.user_id == user.id)) == 0


async def test_user_b_cannot_read_or_change_anything_of_user_a(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    """The object-level authorization matrix over this issue's routes."""
    a, b = await user_factory(display_name="Alice A"), await user_factory(display_name="Bob B")
    a_pair = (await login(api, a.email, TEST_PASSWORD)).json()
    await api.patch(
        "/api/profiles/me", json={"interests": ["hiking", "music", "art"]}, headers=a.headers
    )
    a_photos = [(await upload(api, a.headers, image_bytes("JPEG"))).json() for _ in range(2)]
    b_photo = (await upload(api, b.headers, image_bytes("JPEG"))).json()
    a_before = (await api.get("/api/profiles/me", headers=a.headers)).json()
    missing_id = a_photos[1]["id"] + 10_000

    async def expect_like_missing(method: str, path: str, **kwargs: Any) -> None:
        foreign = await api.request(
            method, path.format(a_photos[0]["id"]), headers=b.headers, **kwargs
        )
        missing = await api.request(method, path.format(missing_id), headers=b.headers, **kwargs)
        assert foreign.status_code == missing.status_code == 404, (method, path)
        assert foreign.json() == missing.json(), (method, path)

    await expect_like_missing("DELETE", "/api/photos/{}")
    await expect_like_missing("POST", "/api/photos/{}/primary")
    for ids in ([a_photos[0]["id"]], [b_photo["id"], a_photos[0]["id"]]):
        response = await api.put("/api/photos/order", json={"photo_ids": ids}, headers=b.headers)
        assert response.status_code == 404
    # B's own routes act on B only; A's private data never appears.
    assert [
        p["id"] for p in (await api.get("/api/photos", headers=b.headers)).json()["photos"]
    ] == [b_photo["id"]]
    me_b = (await api.get("/api/auth/me", headers=b.headers)).json()
    assert me_b["id"] == b.id and me_b["email"] == b.email
    await api.patch("/api/profiles/me", json={"bio": "B was here"}, headers=b.headers)
    public_a = (await api.get(f"/api/profiles/{a.id}", headers=b.headers)).json()
    assert a.email not in str(public_a) and "birth_date" not in public_a
    assert "preferences" not in public_a and "location" not in public_a
    # Logging out with A's refresh token (B holding it) does not end A's session.
    logout = await api.post(
        "/api/auth/logout", json={"refresh_token": a_pair["refresh_token"]}, headers=b.headers
    )
    assert logout.status_code == 204
    refreshed = await api.post("/api/auth/refresh", json={"refresh_token": a_pair["refresh_token"]})
    assert refreshed.status_code == 200
    # B's token on A's photo files is a read of a public photo, allowed unless blocked.
    assert (await api.get(a_photos[0]["url"], headers=b.headers)).status_code == 200
    # Nothing of A changed.
    a_after = (await api.get("/api/profiles/me", headers=a.headers)).json()
    assert a_after == a_before
    new_access = bearer(refreshed.json()["access_token"])
    assert (await api.get("/api/auth/me", headers=new_access)).json()["id"] == a.id
