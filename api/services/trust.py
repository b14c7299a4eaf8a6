"""Moving a user's trust score: one ``trust_events`` row and a clamped ``users.trust_score``.

Owns writing the score. The deltas and bounds are :mod:`common.trust`; this module only applies
them inside the caller's transaction (it never commits), so the score moves if and only if the
action that caused it commits. Other services call :func:`apply_trust` (matching for ``liked``
and ``match``, accounts for ``email_verified``, safety, moderation and admin for the rest).
Events one person can repeat at will against another (toggling a like or a block) go through
:func:`first_in_window` first, so they move the score once per pair and window.
"""

from __future__ import annotations

from sqlalchemy import func, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from common.models import TrustEvent, User
from common.redisclient import RedisClient
from common.redisedge import REDIS_FAILURES
from common.rediskeys import trust_window_key
from common.trust import TRUST_DELTAS, TRUST_MAX, TRUST_MIN, TrustReason


async def apply_trust(session: AsyncSession, *, user_id: int, reason: TrustReason) -> int | None:
    """Record one trust event for ``user_id`` and return the new score (None: no such user).

    The clamp happens in the UPDATE itself, so two concurrent events cannot push the score
    out of 0–100 between a read and a write.
    """
    delta = TRUST_DELTAS[reason]
    score = await session.scalar(
        update(User)
        .where(User.id == user_id)
        .values(
            trust_score=func.greatest(TRUST_MIN, func.least(TRUST_MAX, User.trust_score + delta))
        )
        .returning(User.trust_score)
    )
    if score is None:
        return None
    await session.execute(insert(TrustEvent).values(user_id=user_id, delta=delta, reason=reason))
    return int(score)


async def first_in_window(
    redis: RedisClient, *, reason: TrustReason, actor: int, target: int, window_s: int
) -> bool:
    """Whether ``actor``'s ``reason`` event on ``target`` is the first in ``window_s`` (and so
    should move the score); False when Redis cannot tell, so a repeat is never counted twice."""
    try:
        first = await redis.set(trust_window_key(reason, actor, target), 1, nx=True, ex=window_s)
    except REDIS_FAILURES:
        return False
    return bool(first)
