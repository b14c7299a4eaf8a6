"""``/api/photos`` (the caller's photos) and ``/api/media/{key}`` (the files, served by the API).

Uploads are ``multipart/form-data`` with one part named ``file``. The declared
``Content-Length`` is checked before the body is parsed, so an oversized upload is refused with
413 without being spooled; a request without a length is refused with 411.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import UploadFile

from api.deps import CurrentUser, RedisDep, SessionDep, SettingsDep
from api.errors import ApiError, NotFound, TooLarge
from api.schemas.matches import BIGINT_MAX
from api.schemas.photos import PhotoList, PhotoOrderIn, PhotoOut
from api.services import photos, profiles
from api.services.ratelimit import limit
from api.services.storage import delete_quietly, storage_for

router = APIRouter(prefix="/api", tags=["photos"])

#: Room for the multipart boundaries and part headers around the file itself.
_MULTIPART_OVERHEAD: Final = 16 * 1024
PhotoId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
MediaKey = Annotated[str, Path(min_length=1, max_length=64)]
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def _file_error(message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("body", "file"), "msg": message, "type": "value_error"}]
    )


async def _read_upload(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise ApiError("Content-Length is required", code="length_required", status=411)
    if int(declared) > max_bytes + _MULTIPART_OVERHEAD:
        raise TooLarge(f"a photo may be at most {max_bytes} bytes", code="photo_too_large")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise _file_error("send the photo as multipart/form-data with a part named 'file'")
    async with request.form(max_files=1, max_fields=1) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _file_error("a part named 'file' holding the photo is required")
        data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLarge(f"a photo may be at most {max_bytes} bytes", code="photo_too_large")
    if not data:
        raise _file_error("the file is empty")
    return data


@router.get("/photos", response_model=PhotoList)
async def list_my_photos(user: CurrentUser, session: SessionDep) -> PhotoList:
    """Your photos in display order."""
    rows = await photos.list_photos(session, user.id)
    return PhotoList(photos=[photos.to_out(p) for p in rows])


@router.post(
    "/photos",
    response_model=PhotoOut,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_UPLOAD_BODY,
)
async def upload_photo(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
) -> PhotoOut:
    """Add a JPEG, PNG or WebP photo; it is re-encoded without metadata (GPS included)."""
    await limit(redis, f"photo-upload:{user.id}", max_hits=30, window_s=3600)
    data = await _read_upload(request, settings.photo_max_bytes)
    processed = await photos.process_upload(data, settings)
    storage = storage_for(settings)
    keys: list[str] = []
    try:
        photo, keys = await photos.add_photo(
            session, storage=storage, settings=settings, user_id=user.id, processed=processed
        )
        await profiles.refresh_completeness(session, user.id)
        await session.commit()
    except BaseException:
        await delete_quietly(storage, keys)
        raise
    return photos.to_out(photo)


@router.put("/photos/order", response_model=PhotoList)
async def reorder_photos(data: PhotoOrderIn, user: CurrentUser, session: SessionDep) -> PhotoList:
    """Put your photos in a new order, given as the list of all their ids."""
    rows = await photos.reorder(session, user_id=user.id, photo_ids=data.photo_ids)
    await session.commit()
    return PhotoList(photos=[photos.to_out(p) for p in rows])


@router.post("/photos/{photo_id}/primary", response_model=PhotoList)
async def make_primary(photo_id: PhotoId, user: CurrentUser, session: SessionDep) -> PhotoList:
    """Make one of your photos the primary one shown first in discovery."""
    await photos.set_primary(session, user_id=user.id, photo_id=photo_id)
    await session.commit()
    rows = await photos.list_photos(session, user.id)
    return PhotoList(photos=[photos.to_out(p) for p in rows])


@router.delete(
    "/photos/{photo_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
async def delete_photo(
    photo_id: PhotoId, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Response:
    """Delete one of your photos and its files."""
    keys = await photos.delete_photo(session, user_id=user.id, photo_id=photo_id)
    await profiles.refresh_completeness(session, user.id)
    await session.commit()
    await delete_quietly(storage_for(settings), keys)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/media/{key}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def get_media(
    key: MediaKey, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Response:
    """A photo or thumbnail file, if its owner is visible to you."""
    if not await photos.media_visible(session, viewer_id=user.id, key=key):
        raise NotFound("file not found")
    data = await storage_for(settings).get(key)
    if data is None:
        raise NotFound("file not found")
    return Response(
        content=data,
        media_type=photos.CONTENT_TYPE,
        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
