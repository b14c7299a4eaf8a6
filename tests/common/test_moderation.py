"""The shared content filter, as pure logic: words, phrases, regexes, detectors, precedence."""

from __future__ import annotations

import pytest

from common.moderation import (
    ALLOW,
    Matcher,
    Rule,
    Verdict,
    _required_prefix,
    bench,
    compile_rules,
    fold,
    validate_pattern,
)

ROWS = [
    # Rows as asyncpg / SQLAlchemy hand them over: (pattern, is_regex, category, severity, action)
    ("fuck", False, "profanity", 4, "reject"),
    ("idiot", False, "insult", 2, "warn"),
    ("send nudes", False, "sexual", 3, "reject"),
    ("don't die", False, "harassment", 2, "warn"),
    (r"kill\s+yourself", True, "harassment", 5, "reject"),
    (r"Only\s*Fans", True, "solicitation", 3, "warn"),
]


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    m = compile_rules(ROWS)
    assert m.errors == []
    return m


def test_clean_text_is_allowed(matcher: Matcher) -> None:
    for text in ("", "hey, how was your weekend?", "classy assassin", "I have 2 cats and 3 dogs."):
        assert matcher.check(text) == ALLOW


@pytest.mark.parametrize(
    "text",
    ["fuck", "FUCK off", "what the Fuck!", "f u c k", "F.U.C.K", "fück", "ｆｕｃｋ", "phuck fuck"],
)
def test_words_match_whole_words_across_case_accents_spacing(matcher: Matcher, text: str) -> None:
    assert matcher.check(text) == Verdict("reject", "profanity", "fuck", 4)


def test_literal_is_whole_word_and_leet_is_undone(matcher: Matcher) -> None:
    assert matcher.check("fuckable") == ALLOW  # whole words only; inflections need a regex
    assert matcher.check("you 1d10t").action == "warn"
    assert matcher.check("you 1d10t").matched == "idiot"


def test_phrases_match_with_any_spacing_and_apostrophes(matcher: Matcher) -> None:
    assert matcher.check("pls  SEND   nudes").matched == "send nudes"
    assert matcher.check("send me nudes") == ALLOW
    assert matcher.check("dont die on me").matched == "don't die"


def test_regex_rules_run_case_insensitively(matcher: Matcher) -> None:
    assert matcher.check("go KILL   yourself").matched == r"kill\s+yourself"
    assert matcher.check("check my onlyfans").category == "solicitation"
    assert matcher.check("killing it yourself") == ALLOW


def test_reject_beats_warn_and_severity_breaks_ties(matcher: Matcher) -> None:
    verdict = matcher.check("idiot, kill yourself, fuck")
    assert verdict.action == "reject"
    assert verdict.severity == 5
    assert not verdict.allowed
    assert matcher.check("idiot").allowed


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("call me at 555 123 4567", "contact_info"),
        ("my number is +33 6 12 34 56 78", "contact_info"),
        ("(555) 123-4567 anytime", "contact_info"),
        ("see https://example.org/x", "link"),
        ("my site is bit.ly/abc", "link"),
        ("mail me bob@gmail.com", "link"),
        ("send it to $bobby22 on cash app", "payment"),
        ("my cashapp is $bobby", "payment"),
        ("venmo me for the tickets", "payment"),
        ("paypal.me/bob", "payment"),
    ],
)
def test_detectors_find_off_platform_contact(matcher: Matcher, text: str, category: str) -> None:
    verdict = matcher.check(text)
    assert verdict.action == "warn"
    assert verdict.category == category
    assert verdict.matched is not None and verdict.matched.startswith("@")


@pytest.mark.parametrize(
    "text",
    [
        "it cost $20 total",
        "born in 1995",
        "I am 5'6 and 30",
        "wait... what?",
        "ok.so",
        "a5551234567",
    ],
)
def test_detectors_ignore_lookalikes(matcher: Matcher, text: str) -> None:
    assert matcher.check(text) == ALLOW


def test_detector_rows_override_the_defaults() -> None:
    m = compile_rules(
        [("@phone", False, "contact", 4, "reject"), ("@payment", False, "scam", 5, "reject")]
    )
    assert m.check("text 555 123 4567") == Verdict("reject", "contact", "@phone", 4)
    assert m.check("venmo?") == Verdict("reject", "scam", "@payment", 5)
    assert m.check("www.example.com").action == "warn"  # untouched default


def test_the_matched_term_is_never_text_from_the_message(matcher: Matcher) -> None:
    verdict = matcher.check("secret 555 123 4567 number")
    assert verdict.matched == "@phone"
    assert "555" not in (verdict.matched or "")


def test_bad_rows_are_skipped_not_fatal() -> None:
    m = compile_rules(
        [
            ("(unclosed", True, "x", 1, "warn"),
            ("(capt)ure", True, "x", 1, "warn"),
            ("a*", True, "x", 1, "warn"),
            ("!!!", False, "x", 1, "warn"),
            ("@telepathy", False, "x", 1, "warn"),
            ("fine", False, "x", 1, "explode"),
            Rule("ok", False, "x", 1, "warn"),
        ]
    )
    assert len(m.errors) == 6
    assert m.rule_count == 1
    assert m.check("ok").action == "warn"


def test_validate_pattern_explains_refusals() -> None:
    assert validate_pattern("hello", False) is None
    assert validate_pattern(r"h[e3]llo", True) is None
    assert validate_pattern("@link", False) is None
    assert "regular expression" in (validate_pattern("(", True) or "")
    assert "empty" in (validate_pattern("x?", True) or "")
    assert "non-capturing" in (validate_pattern("(x)", True) or "")
    assert validate_pattern("@nope", False) is not None


def test_fold_forms() -> None:
    low, plain, tokens, spaced = fold("Héllo W0rld, I'm $AM")
    assert low == "héllo w0rld, i'm $am"
    assert plain == "hello w0rld, i'm $am"
    assert tokens == ["hello", "world", "im", "sam"]
    assert not spaced
    assert fold("x f u c k")[3]


def test_required_prefix_is_conservative() -> None:
    assert _required_prefix(r"kill\s+yourself") == "kill"
    assert _required_prefix(r"abcd\w*ing") == "abcd"
    assert _required_prefix("abcd*") == "abc"  # the quantified 'd' may be absent
    assert _required_prefix("abcd?x") == "abc"
    assert _required_prefix("abcd{0,2}") == "abc"
    assert _required_prefix("abc*") is None  # too short to be worth testing
    assert _required_prefix("kill|stab") is None  # an alternative bypasses the prefix
    assert _required_prefix(r"Only\s*Fans") is None  # matched case-insensitively
    assert _required_prefix(r"\bkill") is None
    assert _required_prefix(r"(?:kill)") is None


def test_regex_prefix_precheck_skips_only_texts_that_cannot_match() -> None:
    rows = [
        (r"kill\s+yourself", True, "harassment", 5, "reject"),
        (r"onlyf\w*ns", True, "solicitation", 3, "warn"),
    ]
    with_prefixes = compile_rules(rows)
    assert with_prefixes.regex_prefixes == ("kill", "onlyf")
    # One rule without a known prefix: every text is scanned, as before.
    scanned = compile_rules([*rows, (r"\bstab\w*", True, "harassment", 4, "reject")])
    assert scanned.regex_prefixes is None
    too_many = compile_rules([(f"word{i}x", True, "spam", 1, "warn") for i in range(17)])
    assert too_many.regex_prefixes is None
    for text in ("KILL   yourself now", "my onlyfans", "skillful", "only fans", "hello there"):
        assert with_prefixes.check(text) == scanned.check(text)
    assert with_prefixes.check("KILL   yourself now").action == "reject"
    assert with_prefixes.check("ONLYFANS link in bio").category == "solicitation"
    assert with_prefixes.check("skillful killer") == ALLOW


def test_bench_runs_and_reports_microseconds() -> None:
    results = bench(iterations=200, rule_count=50, repeat=1)
    assert set(results) == {"clean", "detector_hit"}
    assert all(0 < value < 10_000 for value in results.values())
