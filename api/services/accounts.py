"""Accounts: registration, login checks, email codes, password reset and change, deletion.

Owns the users row's credentials and lifecycle and the ``account_tokens`` table. It must not
issue tokens (see :mod:`api.services.sessions`) nor send mail itself: it returns what to send
and the route queues it. Every change of ``users.token_version`` goes through
:func:`bump_token_version` + :func:`announce_token_version` (after the commit), so old access
tokens die in the API (compared with the database) and on realtime nodes (Redis key + event).

Login throttling cannot lock a victim out: the tight budget is per (account, client IP) pair, so
failures from an attacker's address never refuse the owner's; a larger budget per IP slows one
address spraying many accounts; and a per-account budget against many-address (botnet) guessing
counts only addresses that never logged in to the account, so the owner's usual addresses are
never refused by it (a new address can still use password reset).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import ApiError, Conflict, Forbidden, NotAuthenticated
from api.schemas.auth import RegisterIn
from api.services import moderation
from api.services import sessions as refresh
from api.services.passwords import UNUSABLE_HASH, PasswordPool, needs_rehash
from api.services.ratelimit import limit, reset
from api.services.trust import apply_trust
from common.events import TokenBump, publish
from common.models import (
    AccountToken,
    Notification,
    Photo,
    Profile,
    RefreshToken,
    Swipe,
    User,
    UserInterest,
)
from common.redisclient import RedisClient
from common.redisedge import REDIS_FAILURES
from common.rediskeys import known_addresses_key, set_token_version
from common.settings import Settings

VERIFY_EMAIL, RESET_PASSWORD = "verify_email", "reset_password"
#: How long an address that logged in successfully stays exempt from the per-account budget.
KNOWN_ADDRESS_TTL_S = 30 * 24 * 3600

log = logging.getLogger("api.accounts")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def email_key(email: str) -> str:
    """A stable, non-reversible Redis key part for an address (no addresses in Redis)."""
    return hashlib.sha256(email.encode()).hexdigest()[:32]


def _secret_hash(settings: Settings, purpose: str, user_id: int, secret: str) -> bytes:
    """Keyed with the server secret: a leaked table does not reveal 6-digit codes offline."""
    message = f"{purpose}:{user_id}:{secret}".encode()
    return hmac.new(settings.secret_key.encode(), message, hashlib.sha256).digest()


def _address_key(ip: str) -> str:
    return hashlib.sha256(ip.encode()).hexdigest()[:16]


async def find_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(
        select(User).where(func.lower(User.email) == email, User.deleted_at.is_(None))
    )


async def register(
    session: AsyncSession, redis: RedisClient, *, data: RegisterIn, pool: PasswordPool
) -> User:
    """Create the user and its (incomplete) profile; 409 ``email_taken`` if the address is used,
    422 ``content_rejected`` if the content filter refuses the display name."""
    # No account yet: a warn or reject is logged without a user, and no trust moves.
    await moderation.check_texts(
        session, redis, user_id=None, texts={"display_name": data.display_name}
    )
    password_hash = await pool.hash(data.password)
    user = User(email=data.email, password_hash=password_hash)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict("this email is already registered", code="email_taken") from exc
    session.add(
        Profile(
            user_id=user.id,
            display_name=data.display_name,
            birth_date=data.birth_date,
            gender=data.gender,
        )
    )
    await session.flush()
    await session.refresh(user)
    return user


async def authenticate(
    session: AsyncSession,
    redis: RedisClient,
    *,
    pool: PasswordPool,
    settings: Settings,
    email: str,
    password: str,
    ip: str,
) -> User:
    """The user these credentials belong to, or 401 ``invalid_credentials`` (same for unknown)."""
    window, account = settings.login_window_s, email_key(email)
    await limit(redis, f"login:ip:{ip}", max_hits=settings.login_ip_max, window_s=window)
    pair_key = f"login:pair:{account}:{ip}"
    await limit(redis, pair_key, max_hits=settings.login_pair_max, window_s=window)
    known_key, address = known_addresses_key(account), _address_key(ip)
    if not await redis.sismember(known_key, address):
        await limit(
            redis, f"login:acct:{account}", max_hits=settings.login_account_max, window_s=window
        )
    user = await find_by_email(session, email)
    ok = await pool.verify_or_dummy(user.password_hash if user else None, password)
    if user is None or not ok or not user.is_active:
        raise NotAuthenticated("email or password is wrong", code="invalid_credentials")
    await reset(redis, pair_key)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.sadd(known_key, address)
        pipe.expire(known_key, KNOWN_ADDRESS_TTL_S)
        await pipe.execute()
    if user.banned_until is not None and user.banned_until > _now():
        raise Forbidden("account banned", code="banned")
    if needs_rehash(user.password_hash):
        user.password_hash = await pool.hash(password)
    user.last_active_at = _now()
    return user


async def check_password(
    redis: RedisClient, *, pool: PasswordPool, settings: Settings, user: User, password: str
) -> None:
    """Re-authentication for sensitive changes: 403 ``wrong_password``, throttled per user."""
    await limit(
        redis,
        f"reauth:{user.id}",
        max_hits=settings.login_pair_max,
        window_s=settings.login_window_s,
    )
    if not await pool.verify(user.password_hash, password):
        raise Forbidden("password is wrong", code="wrong_password")


async def bump_token_version(session: AsyncSession, user: User) -> int:
    """Kill every access and refresh token of ``user`` (caller commits, then announces)."""
    version: int | None = await session.scalar(
        update(User)
        .where(User.id == user.id)
        .values(token_version=User.token_version + 1)
        .returning(User.token_version)
    )
    assert version is not None
    user.token_version = version
    await refresh.revoke_all(session, user.id)
    return version


async def announce_token_version(redis: RedisClient, user_id: int, version: int) -> None:
    """After the commit: update the realtime nodes' cache and tell them to close old sockets.

    A Redis failure is logged, not raised: the change is committed, and realtime nodes take the
    token version from PostgreSQL whenever it answers (the Redis copy is only their fallback),
    so a stale copy cannot lock the user out. Open sockets then close at their token's expiry.
    """
    try:
        await set_token_version(redis, user_id, version)
        await publish(redis, TokenBump(user=user_id, version=version))
    except REDIS_FAILURES as exc:
        log.warning("token version not announced", extra={"user": user_id, "error": str(exc)})


# Email verification ------------------------------------------------------------------------


async def _retire(session: AsyncSession, user_id: int, purpose: str) -> None:
    await session.execute(
        update(AccountToken)
        .where(
            AccountToken.user_id == user_id,
            AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None),
        )
        .values(used_at=_now())
    )


async def new_email_code(session: AsyncSession, *, settings: Settings, user: User) -> str:
    """A fresh 6-digit code (earlier ones stop working); the caller commits and mails it."""
    await _retire(session, user.id, VERIFY_EMAIL)
    code = f"{secrets.randbelow(1_000_000):06d}"
    session.add(
        AccountToken(
            user_id=user.id,
            purpose=VERIFY_EMAIL,
            secret_hash=_secret_hash(settings, VERIFY_EMAIL, user.id, code),
            expires_at=_now() + dt.timedelta(seconds=settings.email_code_ttl_s),
        )
    )
    return code


async def verify_email(session: AsyncSession, *, settings: Settings, user: User, code: str) -> None:
    """Mark the address verified, or count a failed attempt (committed) and refuse."""
    if user.email_verified_at is not None:
        raise Conflict("email already verified", code="already_verified")
    row = await session.scalar(
        select(AccountToken)
        .where(
            AccountToken.user_id == user.id,
            AccountToken.purpose == VERIFY_EMAIL,
            AccountToken.used_at.is_(None),
        )
        .order_by(AccountToken.id.desc())
        .limit(1)
        .with_for_update()
    )
    if row is None or row.expires_at <= _now():
        raise ApiError("no valid code; ask for a new one", code="code_expired")
    if row.attempts >= settings.email_code_max_attempts:
        raise ApiError("too many wrong codes; ask for a new one", code="code_exhausted")
    if not hmac.compare_digest(
        row.secret_hash, _secret_hash(settings, VERIFY_EMAIL, user.id, code)
    ):
        row.attempts += 1
        await session.commit()
        raise ApiError("wrong code", code="code_invalid")
    row.used_at = _now()
    await _mark_verified(session, user)


async def _mark_verified(session: AsyncSession, user: User) -> None:
    """The address is proven (a code, or a reset link followed): once, with its trust event."""
    if user.email_verified_at is None:
        user.email_verified_at = _now()
        await apply_trust(session, user_id=user.id, reason="email_verified")


# Password reset and change -----------------------------------------------------------------


async def start_reset(session: AsyncSession, *, settings: Settings, email: str) -> str | None:
    """A single-use reset token ``<id>.<secret>`` for the account, or None if there is none."""
    user = await find_by_email(session, email)
    if user is None or not user.is_active:
        return None
    await _retire(session, user.id, RESET_PASSWORD)
    secret = secrets.token_urlsafe(32)
    row = AccountToken(
        user_id=user.id,
        purpose=RESET_PASSWORD,
        secret_hash=_secret_hash(settings, RESET_PASSWORD, user.id, secret),
        expires_at=_now() + dt.timedelta(seconds=settings.reset_token_ttl_s),
    )
    session.add(row)
    await session.flush()
    return f"{row.id}.{secret}"


async def finish_reset(
    session: AsyncSession, *, pool: PasswordPool, settings: Settings, token: str, password: str
) -> User:
    """Set the new password and kill every session; one answer for every kind of bad token."""
    invalid = ApiError("reset link invalid or expired", code="reset_invalid")
    row_id, _, secret = token.partition(".")
    if not row_id.isdigit() or len(row_id) > 18 or not secret:
        raise invalid
    row = await session.get(AccountToken, int(row_id), with_for_update=True)
    if row is None or row.purpose != RESET_PASSWORD or row.used_at is not None:
        raise invalid
    expected = _secret_hash(settings, RESET_PASSWORD, row.user_id, secret)
    if row.expires_at <= _now() or not hmac.compare_digest(row.secret_hash, expected):
        raise invalid
    user = await session.get(User, row.user_id, with_for_update=True)
    if user is None or user.deleted_at is not None or not user.is_active:
        raise invalid
    user.password_hash = await pool.hash(password)
    row.used_at = _now()
    # Following the link proves the mailbox is theirs.
    await _mark_verified(session, user)
    await bump_token_version(session, user)
    return user


async def change_password(
    session: AsyncSession, *, pool: PasswordPool, user: User, password: str
) -> int:
    """Store the new hash and bump the token version (caller checked the old password)."""
    user.password_hash = await pool.hash(password)
    return await bump_token_version(session, user)


# Deletion ----------------------------------------------------------------------------------


async def delete_account(session: AsyncSession, *, user: User) -> list[str]:
    """Remove profile, photos, interests, tokens and swipes; anonymise the users row.

    Messages stay (their sender row is kept, anonymised) so the other party still sees the
    conversation, from a deleted user. Returns the storage keys of the photo files to remove
    after the commit. The caller commits and announces the new token version.
    """
    photos = (
        await session.execute(
            select(Photo.storage_key, Photo.thumb_key).where(Photo.user_id == user.id)
        )
    ).all()
    for model in (Photo, UserInterest, Profile, RefreshToken, AccountToken, Notification):
        await session.execute(delete(model).where(model.user_id == user.id))
    await session.execute(
        delete(Swipe).where(or_(Swipe.swiper_id == user.id, Swipe.target_id == user.id))
    )
    await bump_token_version(session, user)
    user.email = f"deleted-{user.id}-{secrets.token_hex(6)}@deleted.invalid"
    user.password_hash = UNUSABLE_HASH
    user.is_active = False
    user.is_admin = False
    user.email_verified_at = None
    user.deleted_at = _now()
    return [key for pair in photos for key in pair]
