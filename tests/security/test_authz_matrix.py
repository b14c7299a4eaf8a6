"""Object-level authorization over the served route table: user B's token against each of A's
objects on every route with a path id answers 403 or 404 (and 404 exactly as for a missing id),
never A's data, and changes nothing of A's.

The routes come from the app's OpenAPI, so a new route with a path parameter is checked
without anyone editing this file, and fails here until its parameter names an object below.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.models import Block, Match, Message, Notification, Photo, Report
from tests.api.conftest import UserFactory
from tests.security.conftest import Victim

#: Routes whose path id names something public by design: another user's public profile
#: (public fields only, checked below) and a photo file (public unless a block forbids it,
#: checked in tests/api/test_photos.py::test_media_follows_the_block_rule).
PUBLIC_BY_DESIGN = {("GET", "/api/profiles/{user_id}"), ("GET", "/api/media/{key}")}
MISSING_ID = 10**15

#: A valid body for routes that need one, so the refusal comes from authorization, not from
#: validation. Keyed by (method, path template).
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/conversations/{cid}/read"): {"seq": 1},
    ("POST", "/api/admin/reports/{report_id}/resolve"): {"action": "dismiss"},
    ("POST", "/api/admin/users/{user_id}/ban"): {"permanent": True, "reason": "matrix"},
    ("PATCH", "/api/admin/moderation/words/{word_id}"): {"action": "warn"},
}


def operations(spec: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(method, path template, path parameter names) of every operation with a path id."""
    found = []
    for path, item in spec["paths"].items():
        names = re.findall(r"\{([^}]+)\}", path)
        if not names:
            continue
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), path, names))
    return found


def a_objects(victim: Victim, path: str) -> dict[str, object]:
    """The id of A's object that each path parameter names on this route."""
    # On a block route the object is A's block, named by the blocked person's id.
    user_id = victim.blocked.id if path.startswith("/api/blocks") else victim.user.id
    return {
        "user_id": user_id,
        "photo_id": victim.photo_id,
        "key": victim.photo_key,
        "match_id": victim.match_id,
        "cid": victim.cid,
        "seq": 1,
        "notification_id": victim.notification_id,
        "report_id": victim.report_id,
        "word_id": 1,
    }


async def snapshot(sessions: async_sessionmaker[AsyncSession], victim: Victim) -> dict[str, Any]:
    """Everything of A's that a foreign write could have changed."""
    a = victim.user.id
    async with sessions() as session:
        return {
            "photos": (
                await session.execute(
                    select(Photo.id, Photo.position, Photo.is_primary).where(Photo.user_id == a)
                )
            ).all(),
            "match": (
                await session.execute(select(Match.unmatched_at).where(Match.id == victim.match_id))
            ).all(),
            "messages": (
                await session.execute(
                    select(Message.seq, Message.deleted_at).where(
                        Message.conversation_id == victim.cid
                    )
                )
            ).all(),
            "notification": (
                await session.execute(
                    select(Notification.read_at).where(Notification.id == victim.notification_id)
                )
            ).all(),
            "block": (
                await session.execute(select(Block.blocked_id).where(Block.blocker_id == a))
            ).all(),
            "report": (
                await session.execute(select(Report.status).where(Report.id == victim.report_id))
            ).all(),
        }


async def test_user_b_gets_404_or_403_on_every_route_with_an_id_of_a(
    api: httpx.AsyncClient,
    victim: Victim,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    b = await user_factory()
    spec = (await api.get("/openapi.json")).json()
    before = await snapshot(sessions, victim)
    checked: list[str] = []
    for method, path, names in operations(spec):
        if (method, path) in PUBLIC_BY_DESIGN:
            continue
        ids = a_objects(victim, path)
        unknown = [name for name in names if name not in ids]
        assert not unknown, f"{method} {path}: say which object of A's {unknown} names"
        body = BODIES.get((method, path))
        url = path.format(**{name: ids[name] for name in names})
        missing_url = path.format(**{name: MISSING_ID for name in names})
        foreign = await api.request(method, url, json=body, headers=b.headers)
        missing = await api.request(method, missing_url, json=body, headers=b.headers)
        label = f"{method} {path}: {foreign.status_code} {foreign.text[:200]}"
        assert foreign.status_code in (403, 404), label
        if foreign.status_code == 404:
            # A foreign object looks exactly like a missing one.
            assert (missing.status_code, missing.json()) == (404, foreign.json()), label
        checked.append(f"{method} {path}")
    assert len(checked) >= 15, checked
    assert await snapshot(sessions, victim) == before

    # The public-by-design routes give B only public fields of A.
    public = (await api.get(f"/api/profiles/{victim.user.id}", headers=b.headers)).json()
    assert victim.user.email not in str(public)
    assert not {"email", "birth_date", "location", "preferences"} & set(public)
