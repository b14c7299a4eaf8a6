"""Blocks and reports through the real API: totality in both directions, events, flood limits."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services import notifications
from common.events import Block, SafetyEvent, Unblock, Unmatch, decode_event
from common.models import Conversation, ConversationMember, Match, Message, TrustEvent, User
from common.rediskeys import SAFETY_STREAM
from tests.api.conftest import TestUser, UserFactory

_cmids = itertools.count(1)


async def make_match(
    sessions: async_sessionmaker[AsyncSession], a: TestUser, b: TestUser, *, messages: int = 1
) -> tuple[int, int]:
    """A live match with its conversation; ``b`` sent ``messages`` messages. (match id, cid)"""
    low, high = sorted((a.id, b.id))
    async with sessions() as session, session.begin():
        conversation = Conversation()
        session.add(conversation)
        await session.flush()
        match = Match(user_low_id=low, user_high_id=high, conversation_id=conversation.id)
        session.add(match)
        session.add_all(
            [
                ConversationMember(conversation_id=conversation.id, user_id=a.id),
                ConversationMember(conversation_id=conversation.id, user_id=b.id),
            ]
        )
        for seq in range(1, messages + 1):
            session.add(
                Message(
                    conversation_id=conversation.id,
                    seq=seq,
                    sender_id=b.id,
                    cmid=f"test-{next(_cmids)}",
                    body=f"message {seq}",
                )
            )
        await session.flush()
        return match.id, conversation.id


async def stream_mark(redis: Redis) -> bytes:
    """The safety stream's last id now: read events after it with :func:`events_since`."""
    if not await redis.exists(SAFETY_STREAM):
        return b"0-0"
    info: Any = await redis.xinfo_stream(SAFETY_STREAM)
    last: bytes = info["last-generated-id"]
    return last


async def events_since(redis: Redis, mark: bytes) -> list[SafetyEvent]:
    entries: Any = await redis.xread({SAFETY_STREAM: mark}, count=10_000)
    if not entries:
        return []
    return [decode_event(fields[b"e"]) for _id, fields in entries[0][1]]


async def trust_of(sessions: async_sessionmaker[AsyncSession], user_id: int) -> int:
    async with sessions() as session:
        score = await session.scalar(select(User.trust_score).where(User.id == user_id))
        assert score is not None
        return score


async def _surfaces(
    api: httpx.AsyncClient, viewer: TestUser, other: TestUser, cid: int
) -> dict[str, Any]:
    """What ``viewer`` can see of ``other`` on every API surface that exists."""
    profile = await api.get(f"/api/profiles/{other.id}", headers=viewer.headers)
    discovery = await api.get("/api/discovery", headers=viewer.headers)
    matches = await api.get("/api/matches", headers=viewer.headers)
    conversations = await api.get("/api/conversations", headers=viewer.headers)
    history = await api.get(f"/api/conversations/{cid}/messages", headers=viewer.headers)
    assert discovery.status_code == matches.status_code == conversations.status_code == 200
    return {
        "profile": profile.status_code,
        "in_discovery": any(item["user_id"] == other.id for item in discovery.json()["items"]),
        "in_matches": any(item["user"]["user_id"] == other.id for item in matches.json()["items"]),
        "in_conversations": any(
            item["conversation_id"] == cid for item in conversations.json()["items"]
        ),
        "history": history.status_code,
    }


async def test_block_is_total_in_both_directions_and_ends_the_match(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    a, b = await user_factory(), await user_factory()
    match_id, cid = await make_match(sessions, a, b)
    before = await _surfaces(api, a, b, cid)
    assert before["profile"] == 200 and before["in_matches"] and before["history"] == 200

    mark = await stream_mark(redis)
    response = await api.post("/api/blocks", json={"user_id": b.id}, headers=a.headers)
    assert response.status_code == 201, response.text
    assert response.json()["user_id"] == b.id
    assert "email" not in response.text

    for viewer, other in ((a, b), (b, a)):
        seen = await _surfaces(api, viewer, other, cid)
        assert seen == {
            "profile": 404,
            "in_discovery": False,
            "in_matches": False,
            "in_conversations": False,
            "history": 404,
        }, (viewer.id, seen)
        like = await api.post("/api/likes", json={"target_id": other.id}, headers=viewer.headers)
        assert like.status_code == 404

    async with sessions() as session:
        match = await session.get(Match, match_id)
        conversation = await session.get(Conversation, cid)
        assert match is not None and match.unmatched_at is not None and match.unmatched_by == a.id
        assert conversation is not None and conversation.closed_at is not None
    published = await events_since(redis, mark)
    assert Block(blocker=a.id, blocked=b.id) in published
    assert Unmatch(users=(min(a.id, b.id), max(a.id, b.id)), cid=cid) in published

    # Blocking again is harmless and publishes nothing new.
    mark = await stream_mark(redis)
    again = await api.post("/api/blocks", json={"user_id": b.id}, headers=a.headers)
    assert again.status_code == 200
    assert not [e for e in await events_since(redis, mark) if isinstance(e, Block)]


async def test_unblock_does_not_restore_the_match(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    a, b = await user_factory(), await user_factory()
    _, cid = await make_match(sessions, a, b)
    assert (
        await api.post("/api/blocks", json={"user_id": b.id}, headers=a.headers)
    ).status_code == 201
    # The blocked person cannot lift the block.
    assert (await api.delete(f"/api/blocks/{a.id}", headers=b.headers)).status_code == 404
    mark = await stream_mark(redis)
    assert (await api.delete(f"/api/blocks/{b.id}", headers=a.headers)).status_code == 204
    assert Unblock(blocker=a.id, blocked=b.id) in await events_since(redis, mark)
    assert (await api.get("/api/blocks", headers=a.headers)).json()["items"] == []
    assert (await api.delete(f"/api/blocks/{b.id}", headers=a.headers)).status_code == 404
    # Profiles are visible again; the match stays ended.
    seen = await _surfaces(api, a, b, cid)
    assert seen["profile"] == 200
    assert not seen["in_matches"]


async def test_block_list_shows_names_not_emails_and_validates(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    a = await user_factory()
    b = await user_factory(display_name="Blockee")
    c = await user_factory()
    for target in (b, c):
        assert (
            await api.post("/api/blocks", json={"user_id": target.id}, headers=a.headers)
        ).status_code == 201
    listing = await api.get("/api/blocks", headers=a.headers)
    assert [item["user_id"] for item in listing.json()["items"]] == [c.id, b.id]
    assert listing.json()["items"][1]["display_name"] == "Blockee"
    assert b.email not in listing.text and "email" not in listing.text
    assert (await api.get("/api/blocks", headers=b.headers)).json()["items"] == []

    self_block = await api.post("/api/blocks", json={"user_id": a.id}, headers=a.headers)
    assert (self_block.status_code, self_block.json()["code"]) == (400, "invalid_target")
    missing = await api.post("/api/blocks", json={"user_id": 2**62}, headers=a.headers)
    assert missing.status_code == 404
    extra = await api.post(
        "/api/blocks", json={"user_id": b.id, "is_admin": True}, headers=a.headers
    )
    assert extra.status_code == 422
    assert (await api.get("/api/blocks")).status_code == 401


async def test_block_costs_trust_once_and_forgets_notifications(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    a, b = await user_factory(), await user_factory()
    async with sessions() as session, session.begin():
        await notifications.create(session, user_id=a.id, kind="like", about_user_id=b.id)
        await notifications.create(session, user_id=b.id, kind="like", about_user_id=a.id)
    assert len((await api.get("/api/notifications", headers=a.headers)).json()["items"]) == 1
    start = await trust_of(sessions, b.id)
    for _ in range(2):
        await api.post("/api/blocks", json={"user_id": b.id}, headers=a.headers)
        await api.delete(f"/api/blocks/{b.id}", headers=a.headers)
    assert await trust_of(sessions, b.id) == start - 2
    async with sessions() as session:
        reasons = (
            await session.scalars(select(TrustEvent.reason).where(TrustEvent.user_id == b.id))
        ).all()
    assert list(reasons) == ["blocked"]
    for user in (a, b):
        assert (await api.get("/api/notifications", headers=user.headers)).json()["items"] == []
    # While blocked, no new notification about the other person is created.
    await api.post("/api/blocks", json={"user_id": b.id}, headers=a.headers)
    async with sessions() as session, session.begin():
        assert (
            await notifications.create(session, user_id=b.id, kind="like", about_user_id=a.id)
            is None
        )


def _report(user_id: int, **extra: Any) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "type": "harassment",
        "reason": "kept insulting me after I said stop",
    } | extra


async def test_report_validation(api: httpx.AsyncClient, user_factory: UserFactory) -> None:
    a, b = await user_factory(), await user_factory()
    cases = [
        _report(b.id, reason="too short"),
        _report(b.id, reason="          padded  "),
        _report(b.id, reason="x" * 1001),
        _report(b.id, type="rude"),
        _report(b.id, status="banned"),
        _report(b.id, evidence={"messages": [{"cid": 1, "seq": 0}]}),
        _report(b.id, evidence={"messages": [{"cid": 1, "seq": 1}] * 21}),
        _report(b.id, evidence={"url": "http://example.com"}),
    ]
    for body in cases:
        response = await api.post("/api/reports", json=body, headers=a.headers)
        assert response.status_code == 422, body
    self_report = await api.post("/api/reports", json=_report(a.id), headers=a.headers)
    assert (self_report.status_code, self_report.json()["code"]) == (400, "invalid_target")
    assert (
        await api.post("/api/reports", json=_report(2**62), headers=a.headers)
    ).status_code == 404


async def test_report_with_evidence_works_after_a_block_and_refuses_foreign_messages(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    a, b, c = await user_factory(), await user_factory(), await user_factory()
    _, cid = await make_match(sessions, a, b, messages=2)
    _, other_cid = await make_match(sessions, c, b)
    start = await trust_of(sessions, b.id)
    assert (
        await api.post("/api/blocks", json={"user_id": b.id}, headers=a.headers)
    ).status_code == 201

    foreign = _report(b.id, evidence={"messages": [{"cid": other_cid, "seq": 1}]})
    response = await api.post("/api/reports", json=foreign, headers=a.headers)
    assert (response.status_code, response.json()["code"]) == (404, "evidence_not_found")
    missing = _report(b.id, evidence={"messages": [{"cid": cid, "seq": 3}]})
    assert (await api.post("/api/reports", json=missing, headers=a.headers)).status_code == 404

    good = _report(b.id, evidence={"messages": [{"cid": cid, "seq": 2}, {"cid": cid, "seq": 1}]})
    response = await api.post("/api/reports", json=good, headers=a.headers)
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["status"] == "pending" and report["user_id"] == b.id
    mine = (await api.get("/api/reports", headers=a.headers)).json()["items"]
    assert [item["id"] for item in mine] == [report["id"]]
    assert (await api.get("/api/reports", headers=b.headers)).json()["items"] == []
    assert await trust_of(sessions, b.id) == start - 2 - 5


async def test_report_flood_is_refused(
    api: httpx.AsyncClient, user_factory: UserFactory, redis: Redis
) -> None:
    a, b = await user_factory(), await user_factory()
    first = await api.post("/api/reports", json=_report(b.id), headers=a.headers)
    assert first.status_code == 201
    again = await api.post("/api/reports", json=_report(b.id, type="scam"), headers=a.headers)
    assert (again.status_code, again.json()["code"]) == (409, "report_pending")
    # Someone else may still report the same person.
    c = await user_factory()
    assert (
        await api.post("/api/reports", json=_report(b.id), headers=c.headers)
    ).status_code == 201
    # And the reporter hits the hourly cap across targets.
    codes = []
    for _ in range(10):
        target = await user_factory()
        codes.append(
            (await api.post("/api/reports", json=_report(target.id), headers=a.headers)).status_code
        )
    assert codes.count(201) == 8  # 10 an hour: two were spent above
    assert codes[-1] == 429


async def test_block_removes_each_from_the_others_discovery(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    # Far from everyone else the suite creates, so each is the other's only candidate.
    far = (-33.8688, 151.2093)
    a, b = await user_factory(location=far), await user_factory(location=far)

    async def sees(viewer: TestUser, other: TestUser) -> bool:
        page = await api.get("/api/discovery", params={"limit": 50}, headers=viewer.headers)
        assert page.status_code == 200, page.text
        return any(item["user_id"] == other.id for item in page.json()["items"])

    assert await sees(a, b) and await sees(b, a)
    assert (
        await api.post("/api/blocks", json={"user_id": a.id}, headers=b.headers)
    ).status_code == 201
    assert not await sees(a, b)
    assert not await sees(b, a)
