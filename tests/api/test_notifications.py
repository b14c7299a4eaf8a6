"""Notifications through the real API: list by cursor, unread count, read marks, delete, push."""

from __future__ import annotations

from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services import notifications
from common.events import Notify
from common.models import Block, Conversation, Notification
from tests.api.conftest import TestUser, UserFactory
from tests.api.test_matches import like
from tests.api.test_safety import events_since, stream_mark


async def _notify(
    sessions: async_sessionmaker[AsyncSession], redis: Redis, user_id: int, count: int
) -> list[int]:
    async with sessions() as session:
        created = [
            await notifications.create(session, user_id=user_id, kind="system", payload={"n": n})
            for n in range(count)
        ]
        await session.commit()
    await notifications.push(redis, *created)
    return [item.id for item in created if item is not None]


async def test_list_by_cursor_and_unread_count(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    a, b = await user_factory(), await user_factory()
    mark = await stream_mark(redis)
    ids = await _notify(sessions, redis, a.id, 5)
    pushed = [e for e in await events_since(redis, mark) if isinstance(e, Notify)]
    assert [(e.user, e.id, e.kind) for e in pushed] == [(a.id, i, "system") for i in ids]

    seen: list[int] = []
    cursor = None
    for _ in range(5):  # bounded: 5 items in pages of 2 is 3 pages
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/api/notifications", params=params, headers=a.headers)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)
    unread = await api.get("/api/notifications/unread-count", headers=a.headers)
    assert unread.json() == {"unread": 5}
    assert (await api.get("/api/notifications", headers=b.headers)).json()["items"] == []
    bad = await api.get("/api/notifications", params={"cursor": "nonsense"}, headers=a.headers)
    assert bad.status_code in (400, 422)
    assert (
        await api.get("/api/notifications", params={"limit": 101}, headers=a.headers)
    ).status_code == 422


async def test_mark_read_one_and_all_and_delete(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    a, b = await user_factory(), await user_factory()
    first, second, third = await _notify(sessions, redis, a.id, 3)

    # Someone else's notification answers exactly like a missing one.
    for path in (f"/api/notifications/{first}/read",):
        assert (await api.post(path, headers=b.headers)).status_code == 404
    assert (await api.delete(f"/api/notifications/{first}", headers=b.headers)).status_code == 404
    assert (
        await api.post("/api/notifications/999999999/read", headers=a.headers)
    ).status_code == 404

    read = await api.post(f"/api/notifications/{first}/read", headers=a.headers)
    assert read.status_code == 200 and read.json()["read_at"] is not None
    assert (await api.get("/api/notifications/unread-count", headers=a.headers)).json()[
        "unread"
    ] == 2
    unread_only = await api.get(
        "/api/notifications", params={"unread_only": True}, headers=a.headers
    )
    assert [item["id"] for item in unread_only.json()["items"]] == [third, second]

    marked = await api.post("/api/notifications/read-all", headers=a.headers)
    assert marked.json() == {"updated": 2}
    assert (await api.get("/api/notifications/unread-count", headers=a.headers)).json()[
        "unread"
    ] == 0

    assert (await api.delete(f"/api/notifications/{second}", headers=a.headers)).status_code == 204
    assert (await api.delete(f"/api/notifications/{second}", headers=a.headers)).status_code == 404
    left = (await api.get("/api/notifications", headers=a.headers)).json()["items"]
    assert [item["id"] for item in left] == [third, first]
    assert (await api.get("/api/notifications")).status_code == 401


# --- like notifications ----------------------------------------------------------------


async def _likes_of(api: httpx.AsyncClient, user: TestUser) -> list[dict[str, Any]]:
    page = (await api.get("/api/notifications", headers=user.headers)).json()
    return [item for item in page["items"] if item["kind"] == "like"]


async def test_a_like_notifies_its_target_once_per_liker_while_unread(
    api: httpx.AsyncClient, user_factory: UserFactory, redis: Redis
) -> None:
    a, b, c = await user_factory(), await user_factory(), await user_factory()
    mark = await stream_mark(redis)
    assert (await like(api, a, b)).json()["matched"] is False
    likes = await _likes_of(api, b)
    assert [item["payload"] for item in likes] == [{"user_id": a.id}]
    assert likes[0]["read_at"] is None
    pushed = [e for e in await events_since(redis, mark) if isinstance(e, Notify)]
    assert [(e.user, e.id, e.kind, e.payload) for e in pushed] == [
        (b.id, likes[0]["id"], "like", {"user_id": a.id})
    ]
    assert await _likes_of(api, a) == []  # the liker is not notified

    # Coalesced: liking again, or toggling pass and like, adds nothing while it is unread.
    mark = await stream_mark(redis)
    assert (await like(api, a, b)).status_code == 200
    assert (await api.post("/api/passes", json={"target_id": b.id}, headers=a.headers)).is_success
    assert (await like(api, a, b)).status_code == 200
    assert [item["id"] for item in await _likes_of(api, b)] == [likes[0]["id"]]
    assert [e for e in await events_since(redis, mark) if isinstance(e, Notify)] == []

    # Another liker has their own notification.
    assert (await like(api, c, b)).status_code == 200
    assert [item["payload"]["user_id"] for item in await _likes_of(api, b)] == [c.id, a.id]

    # Once read, a new like (after a pass) notifies again.
    read = await api.post(f"/api/notifications/{likes[0]['id']}/read", headers=b.headers)
    assert read.status_code == 200
    assert (await api.post("/api/passes", json={"target_id": b.id}, headers=a.headers)).is_success
    assert (await like(api, a, b)).status_code == 200
    after = await _likes_of(api, b)
    assert [item["payload"]["user_id"] for item in after] == [a.id, c.id, a.id]
    assert after[0]["read_at"] is None
    unread = await api.get("/api/notifications/unread-count", headers=b.headers)
    assert unread.json() == {"unread": 2}


async def test_a_like_that_makes_a_match_notifies_the_match_only(
    api: httpx.AsyncClient, user_factory: UserFactory, redis: Redis
) -> None:
    a, b = await user_factory(), await user_factory()
    assert (await like(api, a, b)).status_code == 200
    mark = await stream_mark(redis)
    body = await make_match_back(api, b, a)
    pushed = [e for e in await events_since(redis, mark) if isinstance(e, Notify)]
    assert sorted((e.user, e.kind) for e in pushed) == sorted([(a.id, "match"), (b.id, "match")])
    assert await _likes_of(api, a) == []  # a's like back made the match: no like for a
    kinds = [
        item["kind"]
        for item in (await api.get("/api/notifications", headers=a.headers)).json()["items"]
    ]
    assert kinds == ["match"]
    assert body["conversation_id"] is not None


async def make_match_back(
    api: httpx.AsyncClient, user: TestUser, target: TestUser
) -> dict[str, Any]:
    response = await like(api, user, target)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["matched"] is True
    return body


async def test_no_like_notification_across_a_block(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    a, b, c = await user_factory(), await user_factory(), await user_factory()
    # A block in either direction: the like is refused and nobody is notified.
    async with sessions() as session:
        session.add_all(
            [Block(blocker_id=a.id, blocked_id=b.id), Block(blocker_id=c.id, blocked_id=a.id)]
        )
        await session.commit()
    mark = await stream_mark(redis)
    for liker, target in ((a, b), (b, a), (a, c), (c, a)):
        assert (await like(api, liker, target)).status_code == 404
    assert [e for e in await events_since(redis, mark) if isinstance(e, Notify)] == []
    for user in (a, b, c):
        assert await _likes_of(api, user) == []

    # A like notification made before a block is gone after it, and stays gone.
    d = await user_factory()
    assert (await like(api, d, b)).status_code == 200
    assert len(await _likes_of(api, b)) == 1
    blocked = await api.post("/api/blocks", json={"user_id": d.id}, headers=b.headers)
    assert blocked.is_success, blocked.text
    assert await _likes_of(api, b) == []
    async with sessions() as session:
        rows = await session.scalars(
            select(Notification.id).where(Notification.user_id == b.id, Notification.kind == "like")
        )
        assert list(rows) == []


# --- message notifications (written by the realtime nodes: tests/realtime/test_notices.py) ---


async def test_a_message_notification_of_a_closed_conversation_is_never_listed(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    a, b = await user_factory(), await user_factory()
    assert (await like(api, a, b)).status_code == 200
    cid = (await make_match_back(api, b, a))["conversation_id"]
    payload = {"user_id": a.id, "conversation_id": cid, "count": 1, "seq": 1}
    async with sessions() as session:
        session.add(Notification(user_id=b.id, kind="message", payload=payload))
        await session.commit()

    async def listed() -> tuple[list[str], int]:
        items = (await api.get("/api/notifications", headers=b.headers)).json()["items"]
        unread = await api.get("/api/notifications/unread-count", headers=b.headers)
        return [item["kind"] for item in items], unread.json()["unread"]

    kinds, unread = await listed()
    assert "message" in kinds and unread == len(kinds)
    # A node's upsert that raced the unmatch (which deletes them) leaves a row: it stays hidden.
    async with sessions() as session:
        await session.execute(
            update(Conversation).where(Conversation.id == cid).values(closed_at=func.now())
        )
        await session.commit()
    kinds, unread = await listed()
    assert "message" not in kinds and unread == len(kinds)
