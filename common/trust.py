"""The trust score's rules: how much each event moves it, its bounds, and the low-trust cap.

Pure: no I/O. The API applies these (``api/services/trust.py`` writes ``trust_events`` and
``users.trust_score`` in the caller's transaction); discovery ranks by the score; the realtime
server reads :func:`daily_message_cap` at authentication and counts sends per user and UTC day
under :func:`common.rediskeys.daily_counter_key`.
"""

from __future__ import annotations

from typing import Final, Literal

TrustReason = Literal[
    "email_verified",
    "liked",
    "match",
    "reported",
    "report_confirmed",
    "content_rejected",
    "blocked",
]

#: How far each event moves the score (the seed product's table).
TRUST_DELTAS: Final[dict[TrustReason, int]] = {
    "email_verified": +5,
    "liked": +1,
    "match": +2,
    "reported": -5,
    "report_confirmed": -10,
    "content_rejected": -3,
    "blocked": -2,
}

#: The same move as ``api/services/trust.apply_trust`` for code without the ORM (asyncpg
#: placeholders: user_id, delta, reason): clamps in the UPDATE and records the event, in one
#: statement. Pass ``TRUST_DELTAS[reason]`` as the delta.
APPLY_TRUST_SQL: Final = (
    "WITH moved AS (UPDATE users SET trust_score = greatest(0, least(100, trust_score + $2))"
    " WHERE id = $1 RETURNING id)"
    " INSERT INTO trust_events (user_id, delta, reason) SELECT id, $2, $3 FROM moved"
)
TRUST_MIN: Final = 0
TRUST_MAX: Final = 100
TRUST_DEFAULT: Final = 50
#: A user whose score is strictly below this sends at most LOW_TRUST_DAILY_MESSAGES a day.
LOW_TRUST_THRESHOLD: Final = 20
LOW_TRUST_DAILY_MESSAGES: Final = 50


def clamp(score: int) -> int:
    return max(TRUST_MIN, min(TRUST_MAX, score))


def apply_delta(score: int, reason: TrustReason) -> int:
    """The score after one event of ``reason``, kept within 0–100."""
    return clamp(score + TRUST_DELTAS[reason])


def is_low_trust(score: int) -> bool:
    return score < LOW_TRUST_THRESHOLD


def daily_message_cap(score: int) -> int | None:
    """How many messages a day a user with ``score`` may send; None means no cap."""
    return LOW_TRUST_DAILY_MESSAGES if is_low_trust(score) else None
