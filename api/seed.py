"""``python -m api.seed``: the interest catalogue and a few demo users, idempotently.

Demo users exist only in development: the command refuses to run with ``MM_ENV=production``.
Their password is printed, never stored anywhere but as an argon2 hash.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.passwords import hash_password
from common.db import make_engine, make_sessionmaker
from common.geo import ewkt
from common.models import (
    Conversation,
    ConversationMember,
    Interest,
    Match,
    Profile,
    User,
    UserInterest,
)
from common.settings import get_settings

INTERESTS = (
    "hiking",
    "cooking",
    "travel",
    "music",
    "movies",
    "reading",
    "running",
    "yoga",
    "photography",
    "gaming",
    "art",
    "dancing",
    "coffee",
    "wine",
    "climbing",
    "cycling",
    "swimming",
    "board-games",
    "theatre",
    "concerts",
    "dogs",
    "cats",
    "gardening",
    "volunteering",
    "languages",
    "tech",
    "fashion",
    "fitness",
    "meditation",
    "football",
)
DEMO_PASSWORD = "demo-password-1"  # noqa: S105 (development only, printed for the developer)
# name, gender, wants, birth year, (lat, lon) around Paris, interests
DEMO_USERS = (
    ("Alice", "woman", ["man"], 1994, (48.8566, 2.3522), ["hiking", "coffee", "music", "travel"]),
    ("Bob", "man", ["woman"], 1992, (48.8600, 2.3400), ["coffee", "music", "cycling", "movies"]),
    ("Chloe", "woman", ["man", "woman"], 1996, (48.8700, 2.3600), ["art", "yoga", "music"]),
    ("David", "man", ["woman"], 1990, (48.8400, 2.3000), ["running", "travel", "wine", "tech"]),
)


def demo_email(name: str) -> str:
    return f"{name.lower()}@demo.mergemeet.dev"


async def seed_interests(session: AsyncSession) -> None:
    rows = [{"slug": slug, "label": slug.replace("-", " ").title()} for slug in INTERESTS]
    await session.execute(insert(Interest).values(rows).on_conflict_do_nothing())


async def seed_demo_users(session: AsyncSession) -> list[int]:
    existing = await session.scalar(select(User.id).where(User.email == demo_email("Alice")))
    if existing is not None:
        return []
    slugs = {i.slug: i.id for i in (await session.scalars(select(Interest))).all()}
    password_hash = hash_password(DEMO_PASSWORD)
    ids: list[int] = []
    for name, gender, wants, year, (lat, lon), interests in DEMO_USERS:
        user = User(
            email=demo_email(name),
            password_hash=password_hash,
            email_verified_at=dt.datetime.now(dt.UTC),
        )
        session.add(user)
        await session.flush()
        session.add(
            Profile(
                user_id=user.id,
                display_name=name,
                birth_date=dt.date(year, 6, 1),
                gender=gender,
                bio=f"Hi, I'm {name}.",
                location=ewkt(lat, lon),
                location_updated_at=dt.datetime.now(dt.UTC),
                pref_genders=wants,
                pref_age_min=21,
                pref_age_max=45,
                is_complete=True,
            )
        )
        session.add_all(UserInterest(user_id=user.id, interest_id=slugs[s]) for s in interests)
        ids.append(user.id)
    # Alice and Bob have matched, so the demo can open a conversation at once.
    conversation = Conversation()
    session.add(conversation)
    await session.flush()
    low, high = sorted(ids[:2])
    session.add(Match(user_low_id=low, user_high_id=high, conversation_id=conversation.id))
    session.add_all(ConversationMember(conversation_id=conversation.id, user_id=u) for u in ids[:2])
    return ids


DEMO_ADMIN_EMAIL = "ops@demo.mergemeet.dev"


async def seed_demo_admin(session: AsyncSession) -> bool:
    """An admin account (no profile) for the ops page; True when it was created now."""
    if await session.scalar(select(User.id).where(User.email == DEMO_ADMIN_EMAIL)) is not None:
        return False
    session.add(
        User(
            email=DEMO_ADMIN_EMAIL,
            password_hash=hash_password(DEMO_PASSWORD),
            is_admin=True,
            email_verified_at=dt.datetime.now(dt.UTC),
        )
    )
    return True


async def main_async() -> None:
    settings = get_settings()
    if settings.env == "production":
        sys.exit("api.seed: refusing to create demo users in production")
    engine = make_engine(settings)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await seed_interests(session)
            created = await seed_demo_users(session)
            admin_created = await seed_demo_admin(session)
    finally:
        await engine.dispose()
    if created:
        names = ", ".join(demo_email(u[0]) for u in DEMO_USERS)
        print(f"[seed] demo users: {names} (password: {DEMO_PASSWORD})")
    else:
        print("[seed] demo data already present")
    if admin_created:
        print(f"[seed] ops page admin: {DEMO_ADMIN_EMAIL} (password: {DEMO_PASSWORD})")


def main() -> None:
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
