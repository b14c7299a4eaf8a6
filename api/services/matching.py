"""Likes, passes, matches and unmatch: the transitions between two people, race-safe.

Owns the swipe rules and the creation and end of a match. A mutual like creates the match,
its conversation, both memberships and both notifications in one transaction; a like that
makes no match notifies its target (``like``, coalesced per liker while unread). Two likes of the
same pair racing on two API processes are serialized by a transaction-scoped advisory lock on
the ordered pair (taken after the swiper's own lock, always in that order, so no deadlock),
and the unique ``(user_low_id, user_high_id)`` constraint with ``ON CONFLICT DO NOTHING`` is the
last guard: exactly one match and one conversation, always. The end of a match (unmatch or
block) closes the conversation and deletes its ``message`` notifications in one transaction.
Events go to the safety stream only after the commit.

Must not: decide visibility differently from discovery (the same active, unbanned, complete,
not-blocked rule), publish before commit, or let an unmatched pair match again.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from api.errors import ApiError, Conflict, NotFound, RateLimited
from api.schemas.discovery import decode_cursor, encode_cursor
from api.schemas.matches import (
    LastMessage,
    LikesReceived,
    MatchItem,
    MatchPage,
    PublicCard,
    SwipeResult,
)
from api.schemas.notifications import NotificationKind
from api.services.discovery import age_years, primary_thumb
from api.services.relations import blocked_between
from api.services.trust import apply_trust, first_in_window
from common import events
from common.models import (
    Conversation,
    ConversationMember,
    Match,
    Message,
    Notification,
    Profile,
    Swipe,
    User,
)
from common.redisclient import RedisClient
from common.redisedge import REDIS_FAILURES
from common.settings import Settings

log = logging.getLogger(__name__)

LIKE_WINDOW: Final = dt.timedelta(days=1)
#: A like moves its target's trust once per liker and this window, however often it is toggled.
LIKED_TRUST_WINDOW_S: Final = 30 * 24 * 3600
MATCH_NOTIFICATION: Final[NotificationKind] = "match"
LIKE_NOTIFICATION: Final[NotificationKind] = "like"
MESSAGE_NOTIFICATION: Final[NotificationKind] = "message"


async def publish_after_commit(redis: RedisClient, *items: events.SafetyEvent) -> None:
    """Publish events once the transaction has committed; a Redis failure is logged, not raised.

    The database is the truth: a lost live event costs only liveness (clients see the change on
    their next sync or list), while failing the request would make the client retry an action
    that already happened.
    """
    try:
        await events.publish(redis, *items)
    except REDIS_FAILURES as exc:
        kinds = [type(item).__name__ for item in items]
        log.warning("safety events not published", extra={"events": kinds, "error": str(exc)})


def pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


async def advisory_lock(session: AsyncSession, key: str) -> None:
    """A transaction-scoped advisory lock; a hash collision only serializes more, never less."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))


async def lock_pair(session: AsyncSession, a: int, b: int) -> None:
    """The pair's lock: every change between two people (swipe, match, block) takes it, so a
    like racing a block cannot create a match after the block committed."""
    low, high = pair(a, b)
    await advisory_lock(session, f"mm:swipe:pair:{low}:{high}")


def visible_user(user_id: ColumnElement[int] | int) -> ColumnElement[bool]:
    """``user_id`` is active, not deleted, not banned and has a complete profile."""
    return exists().where(
        User.id == user_id,
        User.is_active.is_(True),
        User.deleted_at.is_(None),
        or_(User.banned_until.is_(None), User.banned_until <= func.now()),
        Profile.user_id == User.id,
        Profile.is_complete.is_(True),
    )


async def swipe(
    session: AsyncSession,
    redis: RedisClient,
    settings: Settings,
    *,
    user_id: int,
    target_id: int,
    kind: str,
) -> SwipeResult:
    """Like or pass ``target_id``; a like answered by an earlier like creates the match."""
    if target_id == user_id:
        raise ApiError("you cannot swipe on yourself", code="invalid_target")
    low, high = pair(user_id, target_id)
    # Own lock first (the daily cap), then the pair's: every swipe takes them in this order.
    await advisory_lock(session, f"mm:swipe:user:{user_id}")
    await lock_pair(session, user_id, target_id)

    visible = await session.scalar(
        select(visible_user(target_id) & ~blocked_between(user_id, target_id))
    )
    if not visible:
        raise NotFound("no such user")
    existing_match = (
        await session.execute(
            select(Match.id, Match.unmatched_at).where(
                Match.user_low_id == low, Match.user_high_id == high
            )
        )
    ).first()
    if existing_match is not None:
        if existing_match.unmatched_at is not None:
            raise NotFound("no such user")  # an unmatched pair no longer sees each other
        raise Conflict("you are already matched", code="already_matched")

    previous = await session.scalar(
        select(Swipe.kind).where(Swipe.swiper_id == user_id, Swipe.target_id == target_id)
    )
    if kind == "like" and previous != "like":
        await _check_like_cap(session, settings, user_id=user_id)
        # Toggling like/pass must not farm trust for a friend: one ``liked`` per pair a window.
        if await first_in_window(
            redis, reason="liked", actor=user_id, target=target_id, window_s=LIKED_TRUST_WINDOW_S
        ):
            await apply_trust(session, user_id=target_id, reason="liked")
    if previous != kind:
        upsert = pg_insert(Swipe).values(swiper_id=user_id, target_id=target_id, kind=kind)
        await session.execute(
            upsert.on_conflict_do_update(
                index_elements=[Swipe.swiper_id, Swipe.target_id],
                set_={"kind": kind, "created_at": func.now()},
            )
        )
    elif kind == "pass":
        # A repeated pass restarts the cooldown.
        await session.execute(
            update(Swipe)
            .where(Swipe.swiper_id == user_id, Swipe.target_id == target_id)
            .values(created_at=func.now())
        )
    if kind != "like":
        await session.commit()
        return SwipeResult(target_id=target_id, kind="pass", matched=False)

    liked_back = await session.scalar(
        select(
            exists().where(
                Swipe.swiper_id == target_id, Swipe.target_id == user_id, Swipe.kind == "like"
            )
        )
    )
    if not liked_back:
        notice = None
        if previous != "like":
            notice = await _notify_like(session, liker_id=user_id, target_id=target_id)
        await session.commit()
        if notice is not None:
            await publish_after_commit(redis, notice)
        return SwipeResult(target_id=target_id, kind="like", matched=False)
    return await _create_match(session, redis, low=low, high=high, target_id=target_id)


async def _notify_like(
    session: AsyncSession, *, liker_id: int, target_id: int
) -> events.Notify | None:
    """The ``like`` notification of a like that made no match, in the swipe's transaction.

    Coalesced: none while the target still has an unread one from this liker (a like, pass,
    like toggle notifies once until read). Race-free because the caller holds the pair's lock,
    and block-safe because the caller has just checked that no block stands between the two
    (a block takes the same lock). Returns the event to publish after the commit.
    """
    about = Notification.payload["user_id"].astext.cast(BigInteger)
    unread = await session.scalar(
        select(
            exists().where(
                Notification.user_id == target_id,
                Notification.kind == LIKE_NOTIFICATION,
                Notification.read_at.is_(None),
                about == liker_id,
            )
        )
    )
    if unread:
        return None
    payload: dict[str, Any] = {"user_id": liker_id}
    notification_id = await session.scalar(
        insert(Notification)
        .values(user_id=target_id, kind=LIKE_NOTIFICATION, payload=payload)
        .returning(Notification.id)
    )
    assert notification_id is not None
    return events.Notify(
        user=target_id, id=notification_id, kind=LIKE_NOTIFICATION, payload=payload
    )


async def _check_like_cap(session: AsyncSession, settings: Settings, *, user_id: int) -> None:
    likes_today = await session.scalar(
        select(func.count())
        .select_from(Swipe)
        .where(
            Swipe.swiper_id == user_id,
            Swipe.kind == "like",
            Swipe.created_at > func.now() - LIKE_WINDOW,
        )
    )
    if (likes_today or 0) >= settings.daily_like_cap:
        raise RateLimited(f"at most {settings.daily_like_cap} likes a day", code="like_cap_reached")


async def _create_match(
    session: AsyncSession, redis: RedisClient, *, low: int, high: int, target_id: int
) -> SwipeResult:
    conversation_id = await session.scalar(
        insert(Conversation).values(created_at=func.now()).returning(Conversation.id)
    )
    assert conversation_id is not None
    match_id = await session.scalar(
        pg_insert(Match)
        .values(user_low_id=low, user_high_id=high, conversation_id=conversation_id)
        .on_conflict_do_nothing(constraint="uq_matches_pair")
        .returning(Match.id)
    )
    if match_id is None:
        # Unreachable under the pair lock; the constraint still decides, and the conversation
        # made above is rolled back with the transaction.
        raise Conflict("you are already matched", code="already_matched")
    await session.execute(
        insert(ConversationMember),
        [
            {"conversation_id": conversation_id, "user_id": low},
            {"conversation_id": conversation_id, "user_id": high},
        ],
    )
    for user in (low, high):
        await apply_trust(session, user_id=user, reason="match")
    payloads = {
        low: {"match_id": match_id, "conversation_id": conversation_id, "user_id": high},
        high: {"match_id": match_id, "conversation_id": conversation_id, "user_id": low},
    }
    notified = (
        await session.execute(
            insert(Notification)
            .values(
                [
                    {"user_id": user, "kind": MATCH_NOTIFICATION, "payload": payload}
                    for user, payload in payloads.items()
                ]
            )
            .returning(Notification.id, Notification.user_id)
        )
    ).all()
    await session.commit()
    await publish_after_commit(
        redis,
        events.Match(users=(low, high), cid=conversation_id),
        *(
            events.Notify(
                user=user, id=notification_id, kind=MATCH_NOTIFICATION, payload=payloads[user]
            )
            for notification_id, user in notified
        ),
    )
    return SwipeResult(
        target_id=target_id,
        kind="like",
        matched=True,
        match_id=match_id,
        conversation_id=conversation_id,
    )


async def likes_received(session: AsyncSession, *, user_id: int) -> LikesReceived:
    """People who liked ``user_id`` and are not yet answered (no swipe back), visible ones only."""
    theirs = aliased(Swipe)
    mine = aliased(Swipe)
    answered = exists().where(mine.swiper_id == user_id, mine.target_id == theirs.swiper_id)
    count = await session.scalar(
        select(func.count())
        .select_from(theirs)
        .where(
            theirs.target_id == user_id,
            theirs.kind == "like",
            ~answered,
            visible_user(theirs.swiper_id.expression),
            ~blocked_between(user_id, theirs.swiper_id.expression),
        )
    )
    return LikesReceived(count=count or 0)


async def list_matches(
    session: AsyncSession, *, user_id: int, cursor: str | None, limit: int
) -> MatchPage:
    """Live matches, newest first, each with the other's card, last message and unread count.

    One statement: the other person's profile, the caller's membership (unread count) and the
    conversation's last message (at ``last_seq``, the messages key's newest) are joins, the photo
    a correlated subquery; nothing runs per row in Python.
    """
    other_id = case((Match.user_low_id == user_id, Match.user_high_id), else_=Match.user_low_id)
    query = (
        select(
            Match.id.label("match_id"),
            Match.conversation_id,
            Match.created_at.label("matched_at"),
            *CARD_COLUMNS,
            ConversationMember.unread_count,
            *PREVIEW_COLUMNS,
        )
        .select_from(Match)
        .join(Conversation, Conversation.id == Match.conversation_id)
        .join(
            ConversationMember,
            and_(
                ConversationMember.conversation_id == Conversation.id,
                ConversationMember.user_id == user_id,
            ),
        )
        .join(Profile, Profile.user_id == other_id)
        .join(User, User.id == Profile.user_id)
        .outerjoin(Message, LAST_MESSAGE)
        .where(
            or_(Match.user_low_id == user_id, Match.user_high_id == user_id),
            Match.unmatched_at.is_(None),
            Conversation.closed_at.is_(None),
            User.deleted_at.is_(None),
            ~blocked_between(user_id, other_id),
        )
        .order_by(Match.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        (last_id,) = decode_cursor(cursor, (int,))
        query = query.where(Match.id < last_id)
    rows = (await session.execute(query)).all()
    items = [
        MatchItem(
            match_id=row.match_id,
            conversation_id=row.conversation_id,
            matched_at=row.matched_at,
            user=public_card(row),
            last_message=last_message(row),
            unread_count=row.unread_count,
        )
        for row in rows[:limit]
    ]
    next_cursor = encode_cursor([rows[limit - 1].match_id]) if len(rows) > limit else None
    return MatchPage(items=items, next_cursor=next_cursor)


#: The other person's public card, for a query joined to their ``Profile``.
CARD_COLUMNS: Final = (
    Profile.user_id.label("other_id"),
    Profile.display_name,
    age_years(Profile.birth_date).label("age"),
    primary_thumb(Profile.user_id).label("thumb"),
)
#: The conversation's last message, for a query outer-joined on :data:`LAST_MESSAGE`.
PREVIEW_COLUMNS: Final = (
    Message.seq,
    Message.sender_id,
    Message.body,
    Message.kind,
    Message.created_at.label("message_at"),
    Message.deleted_at,
)
#: The last message is the one at ``last_seq`` (derived: one backward probe of the messages
#: primary key, then a lookup by it), not a sort.
LAST_MESSAGE: Final = and_(
    Message.conversation_id == Conversation.id, Message.seq == Conversation.last_seq
)


def public_card(row: Any) -> PublicCard:
    """The card from a row selected with :data:`CARD_COLUMNS`."""
    return PublicCard(
        user_id=row.other_id, display_name=row.display_name, age=row.age, photo_thumb=row.thumb
    )


def last_message(row: Any) -> LastMessage | None:
    """The preview from a row selected with :data:`PREVIEW_COLUMNS`."""
    if row.seq is None:
        return None
    deleted = row.deleted_at is not None
    return LastMessage(
        seq=row.seq,
        sender_id=row.sender_id,
        body=None if deleted else row.body,
        kind=row.kind,
        created_at=row.message_at,
        deleted=deleted,
    )


async def unmatch(
    session: AsyncSession, redis: RedisClient, *, user_id: int, match_id: int
) -> None:
    """End a live match: the conversation closes for both and the pair never meet again."""
    ended = await _end_match(session, Match.id == match_id, user_id=user_id)
    if ended is None:
        raise NotFound("no such match")
    await session.commit()
    await publish_after_commit(redis, ended)


async def end_match_between(
    session: AsyncSession, *, user_id: int, other_id: int
) -> events.Unmatch | None:
    """Inside the caller's transaction, end the pair's live match if any (a block does this).

    Does not commit: the caller commits its own change (the block) together with this one, then
    publishes the returned event with :func:`publish_after_commit`. None when no live match.
    """
    low, high = pair(user_id, other_id)
    return await _end_match(
        session, and_(Match.user_low_id == low, Match.user_high_id == high), user_id=user_id
    )


async def _end_match(
    session: AsyncSession, which: ColumnElement[bool], *, user_id: int
) -> events.Unmatch | None:
    row = (
        await session.execute(
            select(Match.id, Match.user_low_id, Match.user_high_id, Match.conversation_id)
            .where(
                which,
                or_(Match.user_low_id == user_id, Match.user_high_id == user_id),
                Match.unmatched_at.is_(None),
            )
            .with_for_update()
        )
    ).first()
    if row is None:
        return None
    await session.execute(
        update(Match)
        .where(Match.id == row.id)
        .values(unmatched_at=func.now(), unmatched_by=user_id)
    )
    await session.execute(
        update(Conversation)
        .where(Conversation.id == row.conversation_id)
        .values(closed_at=func.coalesce(Conversation.closed_at, func.now()))
    )
    # Its message notifications go with it (one that a node's upsert, realtime/notices.py,
    # writes while this commits is hidden: notifications.list_page skips closed conversations).
    await session.execute(
        delete(Notification).where(
            Notification.user_id.in_((row.user_low_id, row.user_high_id)),
            Notification.kind == MESSAGE_NOTIFICATION,
            Notification.payload["conversation_id"].astext.cast(BigInteger) == row.conversation_id,
        )
    )
    return events.Unmatch(users=(row.user_low_id, row.user_high_id), cid=row.conversation_id)
