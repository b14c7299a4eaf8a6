"""Login sessions: short access tokens plus opaque, rotating refresh tokens stored as SHA-256.

A login starts a *family*; every refresh marks the presented token rotated and issues the next
one in the same family. Presenting a token that was already rotated means it was copied: the
whole family is revoked (both the thief's and the owner's next refresh fail, and the owner logs
in again). The revocation is committed before the refusal is raised, so it survives the
request's rollback. This module never touches passwords or the token version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import Forbidden, NotAuthenticated
from api.schemas.auth import TokenPair
from common.models import RefreshToken, User
from common.settings import Settings
from common.tokens import KeySet, issue_token

_TOKEN_BYTES = 32


def hash_refresh(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_row(user_id: int, family_id: uuid.UUID, ttl_s: int) -> tuple[str, RefreshToken]:
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    row = RefreshToken(
        user_id=user_id,
        family_id=family_id,
        token_hash=hash_refresh(token),
        expires_at=_now() + dt.timedelta(seconds=ttl_s),
    )
    return token, row


def access_token_for(user: User, *, settings: Settings, keys: KeySet) -> str:
    return issue_token(
        keys,
        user_id=user.id,
        token_version=user.token_version,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        ttl_s=settings.access_token_ttl_s,
    )


def _pair(user: User, refresh_token: str, *, settings: Settings, keys: KeySet) -> TokenPair:
    return TokenPair(
        access_token=access_token_for(user, settings=settings, keys=keys),
        refresh_token=refresh_token,
        expires_in=settings.access_token_ttl_s,
    )


async def start_session(
    session: AsyncSession, *, user: User, settings: Settings, keys: KeySet
) -> TokenPair:
    """A new family and its first refresh token, plus an access token (caller commits)."""
    token, row = _new_row(user.id, uuid.uuid4(), settings.refresh_token_ttl_s)
    session.add(row)
    await session.flush()
    return _pair(user, token, settings=settings, keys=keys)


async def rotate(
    session: AsyncSession, *, token: str, settings: Settings, keys: KeySet
) -> TokenPair:
    """Exchange a refresh token for the next pair, or refuse (and revoke on reuse); commits."""
    row = await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == hash_refresh(token)).with_for_update()
    )
    if row is None or row.revoked_at is not None:
        raise NotAuthenticated("refresh token not valid", code="refresh_invalid")
    if row.rotated_at is not None:
        await revoke_family(session, row.family_id)
        await session.commit()
        raise NotAuthenticated("refresh token reused; session revoked", code="refresh_reused")
    now = _now()
    if row.expires_at <= now:
        raise NotAuthenticated("refresh token expired", code="refresh_expired")
    user = await session.get(User, row.user_id)
    if user is None or not user.is_active or user.deleted_at is not None:
        raise NotAuthenticated("account not active", code="refresh_invalid")
    if user.banned_until is not None and user.banned_until > now:
        raise Forbidden("account banned", code="banned")
    row.rotated_at = now
    new_token, new_row = _new_row(user.id, row.family_id, settings.refresh_token_ttl_s)
    session.add(new_row)
    await session.commit()
    return _pair(user, new_token, settings=settings, keys=keys)


async def revoke_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=_now())
    )


async def revoke_family_of(session: AsyncSession, *, user_id: int, token: str) -> None:
    """Log out one device: revoke the family of ``token`` if it is this user's (else nothing)."""
    family_id = await session.scalar(
        select(RefreshToken.family_id).where(
            RefreshToken.token_hash == hash_refresh(token), RefreshToken.user_id == user_id
        )
    )
    if family_id is not None:
        await revoke_family(session, family_id)


async def revoke_all(session: AsyncSession, user_id: int) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=_now())
    )
