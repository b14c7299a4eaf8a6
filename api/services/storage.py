"""Where photo bytes live: the :class:`Storage` interface and its local-disk implementation.

Keys are made here (:func:`new_key`: 24 random bytes, URL-safe, unguessable) and checked
against a strict pattern before any path is built, so a key can never name a file outside the
media folder. Files are written to a temporary name and renamed, so a reader never sees half a
photo. Disk I/O runs in a thread. An S3-compatible backend can implement the same Protocol.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from pathlib import Path
from typing import Protocol

from common.settings import Settings

_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{32}$")


def new_key() -> str:
    return secrets.token_urlsafe(24)


def is_valid_key(key: str) -> bool:
    return bool(_KEY_RE.fullmatch(key))


class Storage(Protocol):
    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def delete(self, key: str) -> None: ...


class LocalStorage:
    """Files under ``root/<first two key chars>/<key>``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not is_valid_key(key):
            raise ValueError("invalid storage key")
        return self.root / key[:2] / key

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{key}.{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def _get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def _delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, key, data)

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, key)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)


def media_dir(settings: Settings) -> Path:
    return settings.data_dir / "media"


def storage_for(settings: Settings) -> Storage:
    """The configured backend (local disk for now)."""
    return LocalStorage(media_dir(settings))


async def delete_quietly(storage: Storage, keys: list[str]) -> None:
    """Remove files after their rows are gone; a leftover file is harmless (unreferenced)."""
    for key in keys:
        try:
            await storage.delete(key)
        except (OSError, ValueError):
            continue
