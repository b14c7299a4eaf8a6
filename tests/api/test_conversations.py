"""Conversations over REST: list, history by seq both ways, read marks, deletion, and 404s."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events import MessageDeleted, ReadUpTo
from common.models import Block, ConversationMember, Message
from tests.api.conftest import TestUser, UserFactory
from tests.api.test_matches import (
    add_messages,
    count_statements,
    events_since,
    make_match,
    stream_mark,
)


async def get_history(
    api: httpx.AsyncClient, user: TestUser, cid: int, **params: Any
) -> dict[str, Any]:
    response = await api.get(
        f"/api/conversations/{cid}/messages", params=params, headers=user.headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def seqs(page: dict[str, Any]) -> list[int]:
    return [message["seq"] for message in page["messages"]]


async def test_history_by_seq_in_both_directions(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    a, b = await user_factory(), await user_factory()
    cid = (await make_match(api, a, b))["conversation_id"]
    assert await get_history(api, a, cid) == {"messages": [], "has_more": False}
    await add_messages(sessions, cid, [a.id, b.id] * 6)  # seq 1..12

    latest = await get_history(api, a, cid, limit=5)
    assert seqs(latest) == [8, 9, 10, 11, 12] and latest["has_more"]
    older = await get_history(api, a, cid, limit=5, before=8)
    assert seqs(older) == [3, 4, 5, 6, 7] and older["has_more"]
    oldest = await get_history(api, a, cid, limit=5, before=3)
    assert seqs(oldest) == [1, 2] and not oldest["has_more"]
    newer = await get_history(api, a, cid, limit=5, after=2)
    assert seqs(newer) == [3, 4, 5, 6, 7] and newer["has_more"]
    newest = await get_history(api, a, cid, limit=5, after=7)
    assert seqs(newest) == [8, 9, 10, 11, 12] and not newest["has_more"]

    first = latest["messages"][0]
    assert first["body"] == "message 8" and first["deleted"] is False
    # Both members read the same rows: REST history agrees with itself across members.
    theirs = await get_history(api, b, cid, after=7)
    assert theirs["messages"] == newest["messages"]
    assert all(m["cmid"] for m in newest["messages"])

    both = await api.get(
        f"/api/conversations/{cid}/messages", params={"before": 5, "after": 2}, headers=a.headers
    )
    assert (both.status_code, both.json()["code"]) == (400, "invalid_cursor")
    too_big = await api.get(
        f"/api/conversations/{cid}/messages", params={"limit": 201}, headers=a.headers
    )
    assert too_big.status_code == 422


async def test_mark_read_moves_forward_and_recounts(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    a, b = await user_factory(), await user_factory()
    cid = (await make_match(api, a, b))["conversation_id"]
    await add_messages(sessions, cid, [b.id, b.id, a.id, b.id, b.id])  # a has 4 unread
    read = f"/api/conversations/{cid}/read"

    mark = await stream_mark(redis)
    response = await api.post(read, json={"seq": 2}, headers=a.headers)
    assert response.json() == {"conversation_id": cid, "last_read_seq": 2, "unread_count": 2}
    assert ReadUpTo(cid=cid, user=a.id, seq=2) in await events_since(redis, mark)

    # Never backwards; never past the last message.
    back = await api.post(read, json={"seq": 1}, headers=a.headers)
    assert back.json()["last_read_seq"] == 2 and back.json()["unread_count"] == 2
    ahead = await api.post(read, json={"seq": 999}, headers=a.headers)
    assert ahead.json() == {"conversation_id": cid, "last_read_seq": 5, "unread_count": 0}
    listed = (await api.get("/api/conversations", headers=a.headers)).json()["items"]
    item = next(i for i in listed if i["conversation_id"] == cid)
    assert (item["last_read_seq"], item["unread_count"]) == (5, 0)
    # b's own state is separate: b has read nothing but sent most of it.
    async with sessions() as session:
        b_state = (
            await session.execute(
                select(ConversationMember.last_read_seq, ConversationMember.unread_count).where(
                    ConversationMember.conversation_id == cid, ConversationMember.user_id == b.id
                )
            )
        ).one()
    assert tuple(b_state) == (0, 1)

    extra = await api.post(read, json={"seq": 1, "user_id": b.id}, headers=a.headers)
    assert extra.status_code == 422
    negative = await api.post(read, json={"seq": -1}, headers=a.headers)
    assert negative.status_code == 422


async def test_delete_own_message(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    a, b = await user_factory(), await user_factory()
    cid = (await make_match(api, a, b))["conversation_id"]
    await add_messages(sessions, cid, [a.id, b.id, a.id])
    unread_before = (
        await api.post(f"/api/conversations/{cid}/read", json={"seq": 0}, headers=b.headers)
    ).json()["unread_count"]
    assert unread_before == 2

    # Someone else's message looks exactly like a missing one.
    foreign = await api.delete(f"/api/conversations/{cid}/messages/2", headers=a.headers)
    missing = await api.delete(f"/api/conversations/{cid}/messages/99", headers=a.headers)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()

    mark = await stream_mark(redis)
    deleted = await api.delete(f"/api/conversations/{cid}/messages/3", headers=a.headers)
    assert deleted.status_code == 204
    published = await events_since(redis, mark)
    assert MessageDeleted(cid=cid, seq=3, users=(a.id, b.id)) in published
    again = await api.delete(f"/api/conversations/{cid}/messages/3", headers=a.headers)
    assert again.status_code == 204
    assert len([e for e in await events_since(redis, mark) if isinstance(e, MessageDeleted)]) == 1

    for viewer in (a, b):
        message = (await get_history(api, viewer, cid))["messages"][2]
        assert message["seq"] == 3 and message["deleted"] is True and message["body"] is None
        conversation = next(
            c
            for c in (await api.get("/api/conversations", headers=viewer.headers)).json()["items"]
            if c["conversation_id"] == cid
        )
        assert conversation["last_message"]["deleted"] is True
        assert conversation["last_message"]["body"] is None
    # b's unread count no longer counts the deleted message, and a recount agrees.
    b_after = (await api.get("/api/conversations", headers=b.headers)).json()["items"]
    assert next(c for c in b_after if c["conversation_id"] == cid)["unread_count"] == 1
    recount = await api.post(f"/api/conversations/{cid}/read", json={"seq": 0}, headers=b.headers)
    assert recount.json()["unread_count"] == 1


async def test_conversation_list_by_activity_with_cursor(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    me = await user_factory()
    others = [await user_factory() for _ in range(4)]
    cids = [(await make_match(api, me, other))["conversation_id"] for other in others]
    # Activity: the second conversation got a message last, the fourth before it.
    base = dt.datetime.now(dt.UTC)
    for index, minutes in ((3, 1), (1, 2)):
        cid = cids[index]
        [seq] = await add_messages(sessions, cid, [others[index].id])
        async with sessions() as session, session.begin():
            await session.execute(
                update(Message)
                .where(Message.conversation_id == cid, Message.seq == seq)
                .values(created_at=base + dt.timedelta(minutes=minutes))
            )
    expected = [cids[1], cids[3], cids[2], cids[0]]  # then the newest-created first

    with count_statements() as statements:
        full = (await api.get("/api/conversations", headers=me.headers)).json()
    assert [c["conversation_id"] for c in full["items"]] == expected
    assert full["items"][0]["user"]["user_id"] == others[1].id
    with count_statements() as single:
        await api.get("/api/conversations", headers=others[0].headers)
    assert 0 < len(single) == len(statements)

    paged: list[int] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/api/conversations", params=params, headers=me.headers)).json()
        paged += [c["conversation_id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert paged == expected


async def test_non_members_get_404_on_every_conversation_route(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    a, b, outsider = await user_factory(), await user_factory(), await user_factory()
    cid = (await make_match(api, a, b))["conversation_id"]
    await add_messages(sessions, cid, [a.id, b.id])
    missing_cid = 10**15

    def routes(conversation_id: int) -> list[tuple[str, str, dict[str, Any] | None]]:
        return [
            ("GET", f"/api/conversations/{conversation_id}/messages", None),
            ("GET", f"/api/conversations/{conversation_id}/messages?after=0", None),
            ("POST", f"/api/conversations/{conversation_id}/read", {"seq": 1}),
            ("DELETE", f"/api/conversations/{conversation_id}/messages/1", None),
        ]

    async def answers(user: TestUser, conversation_id: int) -> list[tuple[int, Any]]:
        out = []
        for method, url, body in routes(conversation_id):
            response = await api.request(method, url, json=body, headers=user.headers)
            out.append((response.status_code, response.json()))
        return out

    reference = await answers(outsider, missing_cid)
    assert all(status == 404 for status, _ in reference)
    assert await answers(outsider, cid) == reference
    listed = (await api.get("/api/conversations", headers=outsider.headers)).json()["items"]
    assert cid not in [c["conversation_id"] for c in listed]

    # A block closes the door too, both ways, even before anyone marks the conversation closed.
    async with sessions() as session, session.begin():
        session.add(Block(blocker_id=b.id, blocked_id=a.id))
    assert await answers(a, cid) == reference
    assert await answers(b, cid) == reference
    async with sessions() as session:
        deleted_at = await session.scalar(
            select(Message.deleted_at).where(Message.conversation_id == cid, Message.seq == 1)
        )
    assert deleted_at is None  # the refused DELETE deleted nothing
