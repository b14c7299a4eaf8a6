"""Profile photos: checking and re-encoding uploads, and the ``photos`` rows of one user.

An upload is trusted only after Pillow has decoded it: the format must be JPEG, PNG or WebP,
the pixel count is checked against ``photo_max_pixels`` *before* any pixel is decoded
(decompression bombs), then the image is rotated upright, flattened to RGB, shrunk to at most
``photo_max_side`` and re-encoded as JPEG without EXIF, ICC or any other metadata (GPS never
survives), plus a thumbnail. Decoding runs in a worker thread. Files are written under fresh
random keys before the row is committed; the caller deletes them if the commit fails.

Every query here is scoped by the owner's id: a foreign photo id answers exactly like a
missing one. This module does not recompute profile completeness (see
:func:`api.services.profiles.refresh_completeness`); the routes do after each change.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import ApiError, Conflict, NotFound
from api.schemas.photos import PhotoOut, media_url
from api.services.relations import is_blocked_between
from api.services.storage import Storage, is_valid_key, new_key
from common.models import Photo, User
from common.settings import Settings

ALLOWED_FORMATS: Final = ("JPEG", "PNG", "WEBP")
CONTENT_TYPE: Final = "image/jpeg"
_JPEG_QUALITY: Final = 85
_DECODE_SLOTS: Final = 2
_decode_slots = asyncio.Semaphore(_DECODE_SLOTS)


@dataclass(frozen=True, slots=True)
class Processed:
    image: bytes
    thumb: bytes
    width: int
    height: int


def _encode(image: Image.Image) -> bytes:
    out = io.BytesIO()
    # No exif=/icc_profile= arguments: the new file carries no metadata at all.
    image.save(out, format="JPEG", quality=_JPEG_QUALITY, optimize=True)
    return out.getvalue()


def _flatten(image: Image.Image) -> Image.Image:
    """RGB on a white background (JPEG has no alpha)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def process_image(data: bytes, *, max_pixels: int, max_side: int, thumb_side: int) -> Processed:
    """Decode, check and re-encode an upload; raise :class:`ApiError` (422) when refused."""
    too_many = ApiError(
        f"image has more than {max_pixels} pixels", code="image_too_many_pixels", status=422
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as opened:
                # Only the header has been read so far: refuse bombs before decoding.
                if opened.width * opened.height > max_pixels:
                    raise too_many
                opened.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced scale
                opened.load()
                upright = ImageOps.exif_transpose(opened)
                image = _flatten(upright)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise too_many from exc
    except UnidentifiedImageError as exc:
        raise ApiError(
            "not a JPEG, PNG or WebP image", code="image_unsupported", status=422
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ApiError("the image could not be decoded", code="image_invalid", status=422) from exc
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    thumb = image.copy()
    thumb.thumbnail((thumb_side, thumb_side), Image.Resampling.LANCZOS)
    return Processed(_encode(image), _encode(thumb), image.width, image.height)


async def process_upload(data: bytes, settings: Settings) -> Processed:
    """Decode in a thread, at most ``_DECODE_SLOTS`` at once (each may take ~200 MB briefly)."""
    async with _decode_slots:
        return await asyncio.to_thread(
            process_image,
            data,
            max_pixels=settings.photo_max_pixels,
            max_side=settings.photo_max_side,
            thumb_side=settings.photo_thumb_side,
        )


def to_out(photo: Photo) -> PhotoOut:
    return PhotoOut(
        id=photo.id,
        position=photo.position,
        is_primary=photo.is_primary,
        width=photo.width,
        height=photo.height,
        url=media_url(photo.storage_key),
        thumb_url=media_url(photo.thumb_key),
    )


async def list_photos(session: AsyncSession, user_id: int) -> list[Photo]:
    rows = await session.scalars(
        select(Photo).where(Photo.user_id == user_id).order_by(Photo.position, Photo.id)
    )
    return list(rows.all())


async def _lock_owner(session: AsyncSession, user_id: int) -> None:
    """Serialize photo changes of one user (count limit, positions) on the users row."""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())


async def add_photo(
    session: AsyncSession,
    *,
    storage: Storage,
    settings: Settings,
    user_id: int,
    processed: Processed,
) -> tuple[Photo, list[str]]:
    """Store the files and add the row (caller commits; on failure it deletes the keys)."""
    await _lock_owner(session, user_id)
    photos = await list_photos(session, user_id)
    if len(photos) >= settings.photo_max_count:
        raise Conflict(f"at most {settings.photo_max_count} photos", code="photo_limit")
    photo = Photo(
        user_id=user_id,
        storage_key=new_key(),
        thumb_key=new_key(),
        content_type=CONTENT_TYPE,
        width=processed.width,
        height=processed.height,
        position=len(photos),
        is_primary=not any(p.is_primary for p in photos),
    )
    keys = [photo.storage_key, photo.thumb_key]
    await storage.put(photo.storage_key, processed.image)
    await storage.put(photo.thumb_key, processed.thumb)
    session.add(photo)
    await session.flush()
    return photo, keys


async def _owned(session: AsyncSession, user_id: int, photo_id: int) -> Photo:
    photo = await session.scalar(
        select(Photo).where(Photo.id == photo_id, Photo.user_id == user_id)
    )
    if photo is None:
        raise NotFound("photo not found")
    return photo


async def delete_photo(session: AsyncSession, *, user_id: int, photo_id: int) -> list[str]:
    """Remove one photo, close the gap in positions, keep a primary; returns the file keys."""
    await _lock_owner(session, user_id)
    photo = await _owned(session, user_id, photo_id)
    await session.delete(photo)
    await session.flush()
    rest = await list_photos(session, user_id)
    for position, other in enumerate(rest):
        other.position = position
    if rest and not any(p.is_primary for p in rest):
        rest[0].is_primary = True
    return [photo.storage_key, photo.thumb_key]


async def reorder(session: AsyncSession, *, user_id: int, photo_ids: list[int]) -> list[Photo]:
    """Apply a new order given as the full list of the caller's photo ids."""
    await _lock_owner(session, user_id)
    photos = {p.id: p for p in await list_photos(session, user_id)}
    if any(pid not in photos for pid in photo_ids):
        raise NotFound("photo not found")
    if len(photo_ids) != len(set(photo_ids)) or set(photo_ids) != set(photos):
        raise ApiError(
            "photo_ids must list each of your photos exactly once",
            code="photo_order_invalid",
            status=422,
        )
    for position, pid in enumerate(photo_ids):
        photos[pid].position = position
    await session.flush()
    return [photos[pid] for pid in photo_ids]


async def set_primary(session: AsyncSession, *, user_id: int, photo_id: int) -> None:
    await _lock_owner(session, user_id)
    chosen = await _owned(session, user_id, photo_id)
    for photo in await list_photos(session, user_id):
        photo.is_primary = photo.id == chosen.id


async def count_photos(session: AsyncSession, user_id: int) -> int:
    return int(await session.scalar(select(func.count()).where(Photo.user_id == user_id)) or 0)


async def media_visible(session: AsyncSession, *, viewer_id: int, key: str) -> bool:
    """Whether ``viewer_id`` may fetch the file ``key``: its owner is visible and not blocked."""
    if not is_valid_key(key):
        return False
    owner_id = await session.scalar(
        select(Photo.user_id)
        .join(User, User.id == Photo.user_id)
        .where(
            or_(Photo.storage_key == key, Photo.thumb_key == key),
            User.deleted_at.is_(None),
            User.is_active.is_(True),
            or_(User.banned_until.is_(None), User.banned_until <= func.now()),
        )
    )
    if owner_id is None:
        return False
    return owner_id == viewer_id or not await is_blocked_between(session, viewer_id, owner_id)
