"""Trust score rules: the deltas table, clamping to 0–100, the low-trust daily cap."""

from __future__ import annotations

import pytest

from common.trust import (
    LOW_TRUST_DAILY_MESSAGES,
    LOW_TRUST_THRESHOLD,
    TRUST_DELTAS,
    apply_delta,
    clamp,
    daily_message_cap,
)


def test_the_seed_deltas() -> None:
    assert TRUST_DELTAS == {
        "email_verified": 5,
        "liked": 1,
        "match": 2,
        "reported": -5,
        "report_confirmed": -10,
        "content_rejected": -3,
        "blocked": -2,
    }


@pytest.mark.parametrize(
    ("score", "reason", "expected"),
    [
        (50, "email_verified", 55),
        (99, "email_verified", 100),
        (100, "liked", 100),
        (5, "report_confirmed", 0),
        (0, "blocked", 0),
        (50, "content_rejected", 47),
    ],
)
def test_apply_delta_clamps(score: int, reason: str, expected: int) -> None:
    assert apply_delta(score, reason) == expected  # type: ignore[arg-type]


def test_clamp_bounds() -> None:
    assert (clamp(-7), clamp(42), clamp(1000)) == (0, 42, 100)


def test_low_trust_cap() -> None:
    assert daily_message_cap(LOW_TRUST_THRESHOLD - 1) == LOW_TRUST_DAILY_MESSAGES
    assert daily_message_cap(LOW_TRUST_THRESHOLD) is None
    assert daily_message_cap(50) is None
