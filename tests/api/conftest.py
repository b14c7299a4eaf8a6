"""Fixtures for API tests: users made directly in the database, with a signed access token
(their type and password are in ``tests/api/support.py``).

Tests that exercise registration and login use the real routes; everything else starts from
``user_factory`` so that each test owns fresh users and never depends on another's data.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.passwords import hash_password
from common.geo import ewkt
from common.models import Profile, User
from tests.api.support import TEST_PASSWORD, TestUser, UserFactory

# Re-exported for the test modules that import them from here.
__all__ = ["TEST_PASSWORD", "TestUser", "UserFactory", "user_factory"]

_PASSWORD_HASH = hash_password(TEST_PASSWORD)
_counter = itertools.count(1)


@pytest.fixture
def user_factory(
    sessions: async_sessionmaker[AsyncSession], make_token: Callable[..., str]
) -> UserFactory:
    """Create a user (with a complete profile unless ``profile=False``) and sign its token."""

    async def create(
        *,
        gender: str = "woman",
        wants: tuple[str, ...] = ("woman", "man", "nonbinary"),
        birth_date: dt.date = dt.date(1995, 5, 5),
        location: tuple[float, float] | None = (48.8566, 2.3522),
        profile: bool = True,
        is_admin: bool = False,
        display_name: str | None = None,
    ) -> TestUser:
        n = next(_counter)
        email = f"user{n}-{dt.datetime.now().timestamp():.0f}@test.mergemeet.dev"
        async with sessions() as session, session.begin():
            user = User(
                email=email,
                password_hash=_PASSWORD_HASH,
                is_admin=is_admin,
                email_verified_at=dt.datetime.now(dt.UTC),
            )
            session.add(user)
            await session.flush()
            if profile:
                session.add(
                    Profile(
                        user_id=user.id,
                        display_name=display_name or f"User {n}",
                        birth_date=birth_date,
                        gender=gender,
                        pref_genders=list(wants),
                        location=ewkt(*location) if location else None,
                        location_updated_at=dt.datetime.now(dt.UTC) if location else None,
                        is_complete=True,
                    )
                )
            user_id = user.id
        return TestUser(id=user_id, email=email, token=make_token(user_id))

    return create
