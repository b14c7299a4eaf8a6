"""The checklist's attacks on the API's front door: forged and stale JWTs, enumeration through
password reset, and a 429 from every rate-limited surface that tests/api does not cover yet.

Already covered elsewhere and not repeated here: refresh-token reuse revoking the family, login
bodies and timing for unknown vs known emails, throttling that cannot lock the owner out
(tests/api/test_auth_*.py); upload bomb, GIF, text named .jpg and GPS EXIF
(tests/api/test_photos.py); admin routes refusing non-admins over the route table
(tests/api/test_admin.py); limits on register, login, reset request per email, location, reports
and the daily like cap (their own test files).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.ratelimit import hits
from common.models import User
from common.settings import Settings
from common.tokens import KeySet, issue_token
from tests.api.auth_support import fresh_ip
from tests.api.conftest import UserFactory
from tests.tokens_support import alg_none, claims, hs256_with_public_key, oversized, signed

Forge = Callable[[KeySet, Settings, int], str]


def _claims(settings: Settings, user_id: int, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"aud": settings.jwt_audience, "iss": settings.jwt_issuer}
    return claims(**(base | {"sub": str(user_id)} | overrides))


def _kid(keys: KeySet) -> str:
    assert keys.active_kid is not None
    return keys.active_kid


ATTACKS: dict[str, tuple[Forge, str]] = {
    "alg none": (
        lambda k, s, u: alg_none(_claims(s, u), kid=_kid(k)),
        "token_bad_algorithm",
    ),
    "HS256 keyed with the public key": (
        lambda k, s, u: hs256_with_public_key(k, _claims(s, u), kid=_kid(k)),
        "token_bad_algorithm",
    ),
    "expired": (
        lambda k, s, u: issue_token(
            k,
            user_id=u,
            token_version=0,
            audience=s.jwt_audience,
            issuer=s.jwt_issuer,
            ttl_s=60,
            now=time.time() - 3600,
        ),
        "token_expired",
    ),
    "no exp": (lambda k, s, u: signed(k, _claims(s, u, exp=None)), "token_invalid_claims"),
    "no sub": (lambda k, s, u: signed(k, _claims(s, u, sub=None)), "token_invalid_claims"),
    "no jti": (lambda k, s, u: signed(k, _claims(s, u, jti=None)), "token_invalid_claims"),
    "no token version": (
        lambda k, s, u: signed(k, _claims(s, u, ver=None)),
        "token_invalid_claims",
    ),
    "wrong audience": (
        lambda k, s, u: signed(k, _claims(s, u, aud="another-app")),
        "token_invalid_claims",
    ),
    "not before in the future": (
        lambda k, s, u: signed(k, _claims(s, u, nbf=int(time.time()) + 600)),
        "token_invalid_claims",
    ),
    "refresh type as access": (
        lambda k, s, u: signed(k, _claims(s, u, typ="refresh")),
        "token_wrong_type",
    ),
    "unknown kid": (
        lambda k, s, u: signed(k, _claims(s, u), kid="k-unknown"),
        "token_unknown_kid",
    ),
    "oversized": (lambda k, s, u: oversized(k, _claims(s, u)), "token_too_large"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_forged_tokens_are_refused_with_their_code(
    api: httpx.AsyncClient,
    keys: KeySet,
    settings: Settings,
    user_factory: UserFactory,
    attack: str,
) -> None:
    user = await user_factory()
    forge, code = ATTACKS[attack]
    token = forge(keys, settings, user.id)
    response = await api.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.json()["code"] == code
    assert response.headers["WWW-Authenticate"] == "Bearer"
    # The same claims, honestly signed, get in: the refusal is the attack's doing.
    honest = signed(keys, _claims(settings, user.id))
    ok = await api.get("/api/auth/me", headers={"Authorization": f"Bearer {honest}"})
    assert ok.status_code == 200 and ok.json()["id"] == user.id


async def test_revoked_token_version_and_foreign_schemes_are_refused(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = await user_factory()
    assert (await api.get("/api/auth/me", headers=user.headers)).status_code == 200
    async with sessions() as session, session.begin():
        await session.execute(update(User).where(User.id == user.id).values(token_version=1))
    revoked = await api.get("/api/auth/me", headers=user.headers)
    assert (revoked.status_code, revoked.json()["code"]) == (401, "token_revoked")
    for header in (f"Basic {user.token}", user.token, "Bearer"):
        refused = await api.get("/api/auth/me", headers={"Authorization": header})
        assert refused.status_code == 401, header


async def test_password_reset_request_answers_alike_for_unknown_and_known_emails(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    user = await user_factory()
    known = await api.post(
        "/api/auth/password-reset/request", json={"email": user.email}, headers=fresh_ip()
    )
    unknown = await api.post(
        "/api/auth/password-reset/request",
        json={"email": "nobody-" + user.email},
        headers=fresh_ip(),
    )
    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
    assert known.status_code == 202


async def _fill(redis: Redis, key: str, count: int, window_s: int = 3600) -> None:
    """Use up a budget as that many earlier requests would have."""
    for _ in range(count):
        await hits(redis, key, window_s=window_s)


async def _assert_429(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1


async def test_email_code_resend_is_limited(
    api: httpx.AsyncClient, redis: Redis, user_factory: UserFactory
) -> None:
    user = await user_factory()
    await _fill(redis, f"email-code:{user.id}", 5)
    await _assert_429(await api.post("/api/auth/email/resend", headers=user.headers))


async def test_reauthentication_is_limited(
    api: httpx.AsyncClient, redis: Redis, settings: Settings, user_factory: UserFactory
) -> None:
    """Password change and account deletion share one per-user budget of password checks."""
    user = await user_factory()
    await _fill(redis, f"reauth:{user.id}", settings.login_pair_max, settings.login_window_s)
    body = {"current_password": "guess guess guess", "new_password": "another fine passphrase"}
    await _assert_429(await api.post("/api/auth/password", json=body, headers=user.headers))
    delete = await api.request(
        "DELETE", "/api/auth/me", json={"password": "guess guess guess"}, headers=user.headers
    )
    await _assert_429(delete)


async def test_reset_request_per_address_and_confirm_are_limited(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    address = fresh_ip()
    ip = address["X-Forwarded-For"]
    await _fill(redis, f"reset:ip:{ip}", 20)
    request = await api.post(
        "/api/auth/password-reset/request", json={"email": "x@example.com"}, headers=address
    )
    await _assert_429(request)
    await _fill(redis, f"reset-confirm:ip:{ip}", 20)
    confirm = await api.post(
        "/api/auth/password-reset/confirm",
        json={"token": "1.abc", "new_password": "another fine passphrase"},
        headers=address,
    )
    await _assert_429(confirm)


async def test_photo_uploads_are_limited(
    api: httpx.AsyncClient, redis: Redis, user_factory: UserFactory
) -> None:
    user = await user_factory()
    await _fill(redis, f"photo-upload:{user.id}", 30)
    response = await api.post(
        "/api/photos",
        files={"file": ("a.jpg", b"not even an image", "image/jpeg")},
        headers=user.headers,
    )
    await _assert_429(response)
