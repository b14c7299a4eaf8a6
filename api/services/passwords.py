"""Password hashing with argon2id (argon2-cffi's defaults), the only place hashes are made.

The synchronous functions serve scripts and test fixtures. Request handlers use the async ones:
hashing runs in a small thread pool behind a semaphore, so a login flood queues here instead of
taking every core, and a request that waits too long for a slot is refused with 503 ``busy``
rather than piling up. :func:`verify_or_dummy` checks an unknown email against a dummy hash
made with the same parameters, so unknown and known emails cost the same time.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from api.errors import Unavailable

_T = TypeVar("_T")
_hasher = PasswordHasher()
#: Stored in place of a hash when an account is deleted: no password verifies against it.
UNUSABLE_HASH = "!unusable"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash of a random secret with the current parameters, made once per process."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _verify_dummy(password: str) -> bool:
    return verify_password(_dummy_hash(), password)


class PasswordPool:
    """Runs argon2 off the event loop: ``threads`` hashes at a time, waiters bounded in time."""

    def __init__(self, *, threads: int, wait_s: float) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")
        self._slots = asyncio.Semaphore(threads)
        self._wait_s = wait_s

    async def _run(self, func: Callable[..., _T], *args: str) -> _T:
        try:
            async with asyncio.timeout(self._wait_s):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise Unavailable("password service busy; retry shortly", code="busy") from exc
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, func, *args)
        finally:
            self._slots.release()

    async def hash(self, password: str) -> str:
        return await self._run(hash_password, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await self._run(verify_password, password_hash, password)

    async def verify_or_dummy(self, password_hash: str | None, password: str) -> bool:
        """Verify against ``password_hash``, or burn the same time on a dummy and return False."""
        if password_hash is None or not password_hash.startswith("$argon2"):
            await self._run(_verify_dummy, password)
            return False
        return await self.verify(password_hash, password)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_pools: dict[tuple[int, float], PasswordPool] = {}


def pool_for(*, threads: int, wait_s: float) -> PasswordPool:
    """The process's pool for these limits (one per setting pair; normally exactly one)."""
    key = (threads, wait_s)
    pool = _pools.get(key)
    if pool is None:
        pool = _pools[key] = PasswordPool(threads=threads, wait_s=wait_s)
    return pool
