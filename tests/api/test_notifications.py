"""Notifications through the real API: list by cursor, unread count, read marks, delete, push."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services import notifications
from common.events import Notify
from tests.api.conftest import UserFactory
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
