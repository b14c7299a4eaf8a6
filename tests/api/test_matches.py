"""Likes, passes, matches and unmatch through the real API, with real PostgreSQL and Redis.

The helpers at the top (``make_match``, ``add_messages``, the safety-stream readers, the SQL
statement counter) are shared with ``test_conversations.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import event, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.matching import end_match_between, publish_after_commit
from common.events import Match, Notify, SafetyEvent, Unmatch, decode_event
from common.models import (
    Block,
    Conversation,
    ConversationMember,
    Message,
    Notification,
    Photo,
    Swipe,
    User,
    top_seq,
)
from common.models import Match as MatchRow
from common.rediskeys import SAFETY_STREAM
from common.settings import Settings
from tests.api.conftest import TestUser, UserFactory

# --- helpers shared with test_conversations.py ---------------------------------------------


async def like(api: httpx.AsyncClient, user: TestUser, target: TestUser | int) -> httpx.Response:
    target_id = target if isinstance(target, int) else target.id
    return await api.post("/api/likes", json={"target_id": target_id}, headers=user.headers)


async def make_match(api: httpx.AsyncClient, a: TestUser, b: TestUser) -> dict[str, Any]:
    """Match ``a`` and ``b`` through the real routes; the second like's answer."""
    assert (await like(api, a, b)).status_code == 200
    response = await like(api, b, a)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["matched"] is True
    return body


async def add_messages(
    sessions: async_sessionmaker[AsyncSession], conversation_id: int, senders: list[int]
) -> list[int]:
    """Commit messages the way the realtime writer does: under the conversation's lock, the
    next seqs after the top one (last_seq and unread counts are derived from these rows)."""
    async with sessions() as session, session.begin():
        await session.execute(
            select(Conversation.id).where(Conversation.id == conversation_id).with_for_update()
        )
        top = int(await session.scalar(select(top_seq(conversation_id))) or 0)
        seqs = list(range(top + 1, top + 1 + len(senders)))
        session.add_all(
            Message(
                conversation_id=conversation_id,
                seq=seq,
                sender_id=sender,
                cmid=uuid.uuid4().hex,
                body=f"message {seq}",
            )
            for seq, sender in zip(seqs, senders, strict=True)
        )
    return seqs


async def stream_mark(redis: Redis) -> bytes:
    last: Any = await redis.xrevrange(SAFETY_STREAM, count=1)
    return bytes(last[0][0]) if last else b"0-0"


async def events_since(redis: Redis, mark: bytes) -> list[SafetyEvent]:
    entries: Any = await redis.xread({SAFETY_STREAM: mark}, count=1000)
    if not entries:
        return []
    return [decode_event(fields[b"e"]) for _id, fields in entries[0][1]]


@contextmanager
def count_statements() -> Iterator[list[str]]:
    """Every SQL statement any engine in this process runs (the API serves in-process)."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


# --- tests ---------------------------------------------------------------------------------


async def test_one_way_like_then_mutual_like_creates_the_match(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    a, b = await user_factory(), await user_factory()
    first = await like(api, a, b)
    assert first.status_code == 200
    assert first.json() == {
        "target_id": b.id,
        "kind": "like",
        "matched": False,
        "match_id": None,
        "conversation_id": None,
    }
    count = await api.get("/api/likes/received/count", headers=b.headers)
    assert count.json() == {"count": 1}
    assert (await api.get("/api/likes/received/count", headers=a.headers)).json() == {"count": 0}
    # Liking again is idempotent.
    assert (await like(api, a, b)).json()["matched"] is False

    mark = await stream_mark(redis)
    body = (await like(api, b, a)).json()
    assert body["matched"] is True
    cid, match_id = body["conversation_id"], body["match_id"]

    low, high = sorted((a.id, b.id))
    async with sessions() as session:
        matches = (
            await session.execute(
                select(MatchRow.id, MatchRow.conversation_id).where(
                    MatchRow.user_low_id == low, MatchRow.user_high_id == high
                )
            )
        ).all()
        assert [tuple(row) for row in matches] == [(match_id, cid)]
        members = await session.scalars(
            select(ConversationMember.user_id).where(ConversationMember.conversation_id == cid)
        )
        assert sorted(members) == [low, high]
        notes = (
            await session.execute(
                select(Notification.user_id, Notification.payload).where(
                    Notification.kind == "match", Notification.user_id.in_((a.id, b.id))
                )
            )
        ).all()
    assert sorted(row.user_id for row in notes) == [low, high]
    assert all(row.payload["conversation_id"] == cid for row in notes)

    published = await events_since(redis, mark)
    assert Match(users=(low, high), cid=cid) in published
    notified = {e.user: e for e in published if isinstance(e, Notify)}
    assert set(notified) == {low, high}
    assert notified[a.id].payload == {"match_id": match_id, "conversation_id": cid, "user_id": b.id}
    assert (await api.get("/api/likes/received/count", headers=b.headers)).json() == {"count": 0}


async def test_concurrent_mutual_likes_make_exactly_one_match(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    for _ in range(6):
        a, b = await user_factory(), await user_factory()
        async with sessions() as session:
            conversations_before = await session.scalar(select(func.count(Conversation.id)))
        first, second = await asyncio.gather(like(api, a, b), like(api, b, a))
        assert first.status_code == second.status_code == 200, (first.text, second.text)
        results = [first.json(), second.json()]
        assert sorted(r["matched"] for r in results) == [False, True]
        low, high = sorted((a.id, b.id))
        async with sessions() as session:
            pairs = await session.scalar(
                select(func.count())
                .select_from(MatchRow)
                .where(MatchRow.user_low_id == low, MatchRow.user_high_id == high)
            )
            conversations_after = await session.scalar(select(func.count(Conversation.id)))
        assert pairs == 1
        assert conversations_after == (conversations_before or 0) + 1


async def test_daily_like_cap(
    api: httpx.AsyncClient, user_factory: UserFactory, settings: Settings
) -> None:
    a = await user_factory()
    targets = [await user_factory() for _ in range(3)]
    saved = settings.daily_like_cap
    settings.daily_like_cap = 2
    try:
        assert (await like(api, a, targets[0])).status_code == 200
        assert (await like(api, a, targets[1])).status_code == 200
        # Re-liking costs nothing; a new like past the cap is refused; passes are free.
        assert (await like(api, a, targets[0])).status_code == 200
        refused = await like(api, a, targets[2])
        assert refused.status_code == 429
        assert refused.json()["code"] == "like_cap_reached"
        passed = await api.post("/api/passes", json={"target_id": targets[2].id}, headers=a.headers)
        assert passed.status_code == 200
    finally:
        settings.daily_like_cap = saved


async def test_like_refusals(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    a, b = await user_factory(), await user_factory()
    blocked, blocker, banned = await user_factory(), await user_factory(), await user_factory()
    async with sessions() as session, session.begin():
        session.add_all(
            [
                Block(blocker_id=a.id, blocked_id=blocked.id),
                Block(blocker_id=blocker.id, blocked_id=a.id),
            ]
        )
        await session.execute(
            update(User)
            .where(User.id == banned.id)
            .values(banned_until=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        )
    self_like = await like(api, a, a)
    assert (self_like.status_code, self_like.json()["code"]) == (400, "invalid_target")
    missing = await like(api, a, 10**15)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    for hidden in (blocked, blocker, banned):
        response = await like(api, a, hidden)
        assert response.status_code == 404
        assert response.json() == missing.json()  # indistinguishable from a missing user
    assert (await like(api, blocker, a)).status_code == 404
    extra = await api.post(
        "/api/likes", json={"target_id": b.id, "trust_score": 100}, headers=a.headers
    )
    assert extra.status_code == 422
    assert (
        await api.post("/api/likes", json={"target_id": 0}, headers=a.headers)
    ).status_code == 422
    assert (await api.post("/api/likes", json={"target_id": b.id})).status_code == 401
    await make_match(api, a, b)
    again = await like(api, a, b)
    assert (again.status_code, again.json()["code"]) == (409, "already_matched")


async def test_pass_and_like_replace_each_other(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    a, b = await user_factory(), await user_factory()
    passed = await api.post("/api/passes", json={"target_id": b.id}, headers=a.headers)
    assert passed.json()["kind"] == "pass" and passed.json()["matched"] is False
    assert (await api.get("/api/likes/received/count", headers=b.headers)).json()["count"] == 0
    assert (await like(api, a, b)).json()["kind"] == "like"
    assert (await api.get("/api/likes/received/count", headers=b.headers)).json()["count"] == 1
    await api.post("/api/passes", json={"target_id": b.id}, headers=a.headers)
    assert (await api.get("/api/likes/received/count", headers=b.headers)).json()["count"] == 0
    async with sessions() as session:
        kinds = list(await session.scalars(select(Swipe.kind).where(Swipe.swiper_id == a.id)))
    assert kinds == ["pass"]


async def test_matches_list_in_one_query(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    a = await user_factory()
    b = await user_factory(display_name="Bea", birth_date=dt.date(1990, 1, 1))
    c, d = await user_factory(), await user_factory()
    with_b = await make_match(api, a, b)
    with_c = await make_match(api, a, c)
    with_d = await make_match(api, a, d)
    await add_messages(sessions, with_b["conversation_id"], [b.id, a.id, b.id, b.id])
    async with sessions() as session, session.begin():
        session.add_all(
            [
                Photo(
                    user_id=b.id,
                    storage_key=f"s-{uuid.uuid4().hex}",
                    thumb_key=key,
                    content_type="image/jpeg",
                    width=10,
                    height=10,
                    position=position,
                    is_primary=primary,
                )
                for key, position, primary in (
                    (f"t-other-{uuid.uuid4().hex}", 0, False),
                    (f"t-primary-{b.id}", 1, True),
                )
            ]
        )

    with count_statements() as many:
        response = await api.get("/api/matches", headers=a.headers)
    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["match_id"] for item in items] == [
        with_d["match_id"],
        with_c["match_id"],
        with_b["match_id"],
    ]
    bea = items[2]
    age = dt.date.today().year - 1990
    assert bea["user"] == {
        "user_id": b.id,
        "display_name": "Bea",
        "age": age,
        "photo_thumb": f"t-primary-{b.id}",
    }
    assert bea["unread_count"] == 3
    assert bea["last_message"]["seq"] == 4
    assert bea["last_message"]["body"] == "message 4"
    assert bea["last_message"]["sender_id"] == b.id
    assert items[0]["last_message"] is None and items[0]["unread_count"] == 0
    assert "email" not in str(response.json())

    # One match or three: the same number of statements (no query per row).
    with count_statements() as few:
        assert len((await api.get("/api/matches", headers=d.headers)).json()["items"]) == 1
    assert 0 < len(few) == len(many)

    page = (await api.get("/api/matches", params={"limit": 2}, headers=a.headers)).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = (
        await api.get(
            "/api/matches", params={"limit": 2, "cursor": page["next_cursor"]}, headers=a.headers
        )
    ).json()
    assert [i["match_id"] for i in page["items"] + rest["items"]] == [i["match_id"] for i in items]
    assert rest["next_cursor"] is None


async def test_unmatch_closes_the_conversation_for_both(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    place = (2.0, 150.0)  # nobody else's area: discovery below shows only these two
    a, b = await user_factory(location=place), await user_factory(location=place)
    outsider = await user_factory()
    matched = await make_match(api, a, b)
    cid, match_id = matched["conversation_id"], matched["match_id"]
    await add_messages(sessions, cid, [a.id, b.id])
    history = f"/api/conversations/{cid}/messages"
    assert (await api.get(history, headers=b.headers)).status_code == 200

    assert (
        await api.delete(f"/api/matches/{match_id}", headers=outsider.headers)
    ).status_code == 404
    mark = await stream_mark(redis)
    assert (await api.delete(f"/api/matches/{match_id}", headers=a.headers)).status_code == 204
    low, high = sorted((a.id, b.id))
    assert Unmatch(users=(low, high), cid=cid) in await events_since(redis, mark)

    async with sessions() as session:
        closed_at = await session.scalar(
            select(Conversation.closed_at).where(Conversation.id == cid)
        )
        row = (
            await session.execute(
                select(MatchRow.unmatched_at, MatchRow.unmatched_by).where(MatchRow.id == match_id)
            )
        ).one()
    assert closed_at is not None and row.unmatched_at is not None and row.unmatched_by == a.id

    for user, other in ((a, b), (b, a)):
        assert (await api.get(history, headers=user.headers)).status_code == 404
        matches = (await api.get("/api/matches", headers=user.headers)).json()["items"]
        assert match_id not in [m["match_id"] for m in matches]
        conversations = (await api.get("/api/conversations", headers=user.headers)).json()
        assert cid not in [c["conversation_id"] for c in conversations["items"]]
        discovered = await api.get("/api/discovery", params={"limit": 50}, headers=user.headers)
        assert other.id not in [c["user_id"] for c in discovered.json()["items"]]
        # No re-match: the other person is gone for good.
        assert (await like(api, user, other)).status_code == 404
    assert (await api.delete(f"/api/matches/{match_id}", headers=b.headers)).status_code == 404


async def test_end_match_between_for_a_block_flow(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    """The hook a block uses: ends the live match inside the caller's transaction, no commit."""
    a, b, c = await user_factory(), await user_factory(), await user_factory()
    cid = (await make_match(api, a, b))["conversation_id"]
    low, high = sorted((a.id, b.id))

    async with sessions() as session:
        ended = await end_match_between(session, user_id=b.id, other_id=a.id)
        assert ended == Unmatch(users=(low, high), cid=cid)
        await session.rollback()  # the caller's transaction decides: nothing happened yet
    assert (
        await api.get(f"/api/conversations/{cid}/messages", headers=a.headers)
    ).status_code == 200

    async with sessions() as session:
        assert await end_match_between(session, user_id=a.id, other_id=c.id) is None
        ended = await end_match_between(session, user_id=b.id, other_id=a.id)
        session.add(Block(blocker_id=b.id, blocked_id=a.id))
        await session.commit()
    assert ended is not None
    mark = await stream_mark(redis)
    await publish_after_commit(redis, ended)
    assert await events_since(redis, mark) == [ended]
    async with sessions() as session:
        by = await session.scalar(
            select(MatchRow.unmatched_by).where(MatchRow.conversation_id == cid)
        )
    assert by == b.id
    assert (
        await api.get(f"/api/conversations/{cid}/messages", headers=a.headers)
    ).status_code == 404
    async with sessions() as session:
        assert await end_match_between(session, user_id=b.id, other_id=a.id) is None
