"""The content filter shared by the API (bio, display name) and the realtime server (messages).

Owns turning the admins' ``moderation_words`` rows into ONE compiled :class:`Matcher` and the
verdict it gives a text: ``allow``, ``warn`` or ``reject``, with the category and the matched
*term* (the rule's pattern or a detector name, never a slice of the text, so logging a verdict
never logs a message body). Pure: no I/O, no clock, no settings. Loading the rows (SQL below,
for asyncpg or SQLAlchemy alike), caching and reloading on ``ModerationChanged`` belong to the
callers.

How a text is matched, cheapest first (it runs on the realtime hot path):

- literal words and phrases: the text is case-folded, accents and full-width forms are folded
  (only when the text is not ASCII), common leet substitutions are undone (``$h1t`` → ``shit``),
  then split into alphanumeric tokens; one set intersection finds every literal word. Literals
  match whole words only (``ass`` does not match ``class``): write a regex rule for inflections.
  Letters spelled out with separators (``f u c k``, ``f.u.c.k``) are joined and looked up too.
- admin regex rules: one alternation with a named group per rule, searched on the case-folded
  text (digits and symbols intact); skipped outright when every rule starts with a known literal
  and the text contains none of them (see :func:`_required_prefix`).
- built-in detectors of off-platform contact: phone numbers, links, payment handles
  (``$cashtag``, venmo / cash app / zelle / paypal, paypal.me links). A row whose pattern is
  ``@phone``, ``@link`` or ``@payment`` sets that detector's category, severity and action;
  without such a row the defaults in :data:`DETECTOR_DEFAULTS` apply (warn).

A ``reject`` beats a ``warn``; among equals the higher severity wins.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from common.rediskeys import MODERATION_VERSION

Action = Literal["warn", "reject"]
VerdictAction = Literal["allow", "warn", "reject"]

#: The rows a matcher is compiled from, in the column order a ``compile_rules`` row has.
LOAD_RULES_SQL: Final = (
    "SELECT pattern, is_regex, category, severity, action FROM moderation_words ORDER BY id"
)
#: One moderation_log row (asyncpg placeholders): user_id, source, category, action, matched.
#: ``matched`` is :attr:`Verdict.matched` (a rule's term), never the message.
INSERT_LOG_SQL: Final = (
    "INSERT INTO moderation_log (user_id, source, category, action, matched)"
    " VALUES ($1, $2, $3, $4, left($5, 200))"
)
#: Redis key holding an opaque token that changes whenever the word list changes; a process
#: whose cached matcher was built for another token reloads (see api/services/moderation.py).
VERSION_KEY: Final = MODERATION_VERSION
#: Pattern prefix of the rows that configure a built-in detector instead of adding a word.
DETECTOR_PREFIX: Final = "@"

_LEET_MAP: Final = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
_LEET: Final = str.maketrans(_LEET_MAP)


def _ascii_table() -> bytes:
    """One byte table: letters lowercased, leet undone, every other byte a separator."""
    table = bytearray(b" " * 256)
    for code in range(ord("a"), ord("z") + 1):
        table[code] = table[code - 32] = code
    for code in range(ord("0"), ord("9") + 1):
        table[code] = code
    for source, target in _LEET_MAP.items():
        table[ord(source)] = ord(target)
    return bytes(table)


# The ASCII fast path: lowercase, leet and tokenising in one C-speed translate + split.
_ASCII_WORDS: Final = _ascii_table()
# Dropped, not a separator: "don't" is one word, and "I'm a" is not three single letters.
_APOSTROPHE: Final = b"'"
_ASCII_SHAPE: Final = bytes(ord("x") if chr(code).isalnum() else ord(" ") for code in range(256))
_TOKEN: Final = re.compile(r"[^\W_]+")
# Three or more single letters in a row ("f u c k", "f.u.c.k" once separators are spaces).
_SPACED: Final = re.compile(r" [^ ](?: [^ ]){2,}(?= )")

_TLDS: Final = (
    "com|net|org|io|me|co|ly|app|link|xyz|gg|info|biz|ru|tk|site|online|tv|to|us|uk|de|fr"
)
# The detectors as ONE scan whose every match starts with a digit, '.', '$' or ':', so the
# regex engine skips all other characters in C; the first character tells which detector hit.
# Each branch re-checks its start with a lookbehind (what precedes the first character).
_DETECTORS: Final = re.compile(
    r"[0-9.$:](?:"
    # phone: 7–15 digits with at most two of ' ().-' between them, not inside a word
    r"(?<=[0-9])(?<![a-z0-9_][0-9])(?:[ ().\-]{0,2}[0-9]){6,14}(?![a-z0-9_])"
    # link: a domain ending in a common TLD, or a scheme ("://")
    rf"|(?<=[a-z0-9]\.)(?:{_TLDS})(?![a-z0-9_-])"
    r"|(?<=:)//[^\s]"
    # payment: a cashtag ($name; "$20" is a price, not a handle)
    r"|(?<=\$)(?<![a-z0-9_$]\$)[a-z][a-z0-9_]{1,19}(?![a-z0-9_])"
    r")"
)
_DETECTOR_BY_FIRST: Final = {".": "link", ":": "link", "$": "payment"}
# Payment services named in words are tokens, looked up with the literal words.
_PAYMENT_WORDS: Final = ("venmo", "cashapp", "cash app", "zelle", "paypal", "paypal me")


@dataclass(frozen=True, slots=True)
class Rule:
    """One word, phrase, regex or detector setting, as an admin stored it."""

    pattern: str
    is_regex: bool
    category: str
    severity: int
    action: Action


#: Built-in detectors: name -> the rule used when no ``@name`` row overrides it.
DETECTOR_DEFAULTS: Final[dict[str, Rule]] = {
    "phone": Rule("@phone", False, "contact_info", 2, "warn"),
    "link": Rule("@link", False, "link", 2, "warn"),
    "payment": Rule("@payment", False, "payment", 3, "warn"),
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the filter says about a text; ``matched`` is a rule's term, never the text."""

    action: VerdictAction
    category: str | None = None
    matched: str | None = None
    severity: int = 0

    @property
    def allowed(self) -> bool:
        return self.action != "reject"


ALLOW: Final = Verdict("allow")


def fold(text: str) -> tuple[str, str, list[str], bool]:
    """Split ``text`` into the forms the matcher reads, all case-folded.

    Returns ``(low, plain, tokens, spaced)``: ``low`` for admin regexes; ``plain`` with
    accents and full-width forms folded too, for the detectors; ``tokens``, the leet-undone
    alphanumeric words that literal rules are looked up in; ``spaced``, whether three or more
    single characters stand in a row (``f u c k``), worth joining. ASCII text (nearly every
    message) takes byte-table translates and a split; other text pays for Unicode
    decomposition.
    """
    if text.isascii():
        low = text.lower()
        words = text.encode().translate(_ASCII_WORDS, _APOSTROPHE)
        # Every word character becomes 'x': single-letter runs show as " x x x ".
        spaced = b" x x x " in b" %b " % words.translate(_ASCII_SHAPE)
        return low, low, words.decode().split(), spaced
    low = text.casefold()
    plain = "".join(
        ch for ch in unicodedata.normalize("NFKD", low) if not unicodedata.combining(ch)
    )
    if plain.isascii():
        words = plain.encode().translate(_ASCII_WORDS, _APOSTROPHE)
        spaced = b" x x x " in b" %b " % words.translate(_ASCII_SHAPE)
        return low, plain, words.decode().split(), spaced
    tokens = _TOKEN.findall(plain.replace("'", "").translate(_LEET))
    return low, plain, tokens, len(tokens) > 2


def _literal_key(pattern: str) -> str:
    """A literal pattern in the same normal form as the text's tokens, words joined by spaces."""
    return " ".join(fold(pattern)[2])


def _rank(rule: Rule) -> tuple[int, int]:
    return (1 if rule.action == "reject" else 0, rule.severity)


def _worse(rule: Rule, best: Rule | None) -> Rule:
    return rule if best is None or _rank(rule) > _rank(best) else best


def _as_rule(row: Rule | Sequence[Any]) -> Rule:
    if isinstance(row, Rule):
        return row
    pattern, is_regex, category, severity, action = row[0], row[1], row[2], row[3], row[4]
    if action not in ("warn", "reject"):
        raise ValueError(f"unknown moderation action {action!r}")
    return Rule(str(pattern), bool(is_regex), str(category), int(severity), action)


def _regex_source(pattern: str) -> str:
    """The pattern as one branch of the shared alternation; texts are lowercased, so only a
    pattern that spells an uppercase letter needs (scoped, slower) case-insensitivity."""
    return f"(?i:{pattern})" if pattern != pattern.lower() else f"(?:{pattern})"


# A regex's leading literal must appear in any text it matches; past this many distinct
# prefixes, testing each with ``in`` costs more than the combined regex scan it would skip.
_MAX_REGEX_PREFIXES: Final = 16
_PREFIX_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def _required_prefix(pattern: str) -> str | None:
    """A literal every match of the regex ``pattern`` starts with, or None if none is known.

    Deliberately conservative (None is always safe: the rule is then scanned for): only a
    pattern with no uppercase (so matched case-sensitively, see :func:`_regex_source`) and no
    ``|`` anywhere (so no alternative bypasses the prefix), whose leading run of ``[a-z0-9]``
    is at least 3 characters once a quantified last character (``ab*``, ``ab?``) is dropped.
    """
    if pattern != pattern.lower() or "|" in pattern:
        return None
    end = 0
    while end < len(pattern) and pattern[end] in _PREFIX_CHARS:
        end += 1
    if end < len(pattern) and pattern[end] in "*+?{":
        end -= 1
    return pattern[:end] if end >= 3 else None


def validate_pattern(pattern: str, is_regex: bool) -> str | None:
    """Why a pattern cannot be compiled (for the admin API to refuse it), or None if fine."""
    if pattern.startswith(DETECTOR_PREFIX):
        if is_regex or pattern[1:] not in DETECTOR_DEFAULTS:
            names = ", ".join(f"@{name}" for name in DETECTOR_DEFAULTS)
            return f"detector rows are one of {names} (not regex)"
        return None
    if is_regex:
        try:
            compiled = re.compile(_regex_source(pattern))
        except re.error as exc:
            return f"invalid regular expression: {exc}"
        if compiled.groups:
            # Rules share one alternation: their own groups would renumber each other's.
            return "use non-capturing groups (?:...) in moderation regexes"
        if compiled.search("") is not None:
            return "the regex matches the empty string"
        return None
    if not _literal_key(pattern):
        return "the pattern has no letters or digits"
    return None


@dataclass(slots=True)
class Matcher:
    """The compiled form of a rule list; build with :func:`compile_rules`, then call ``check``."""

    literals: dict[str, Rule] = field(default_factory=dict)
    # First token of each multi-word phrase -> the phrases starting with it.
    phrases: dict[str, list[tuple[str, Rule]]] = field(default_factory=dict)
    # Every token worth a closer look: a literal word or a phrase's first token.
    lookup: frozenset[str] = frozenset()
    # All admin regexes as one alternation (a single scan finds out whether any matches)...
    regex: re.Pattern[str] | None = None
    # ...then, only on a hit, each rule's own regex says which ones.
    regex_rules: list[tuple[re.Pattern[str], Rule]] = field(default_factory=list)
    # When every admin regex has a known literal prefix (and there are few): a text holding
    # none of them cannot match, and the scan is skipped. None: always scan.
    regex_prefixes: tuple[str, ...] | None = None
    detectors: dict[str, Rule] = field(default_factory=lambda: dict(DETECTOR_DEFAULTS))
    #: Rows that could not be compiled (skipped, never fatal: a bad row must not stop a node).
    errors: list[str] = field(default_factory=list)
    rule_count: int = 0

    def check(self, text: str) -> Verdict:
        """The verdict for ``text``: the worst rule it matches, or :data:`ALLOW`."""
        if not text:
            return ALLOW
        best: Rule | None = None
        low, plain, tokens, spaced = fold(text)
        if not self.lookup.isdisjoint(tokens):
            best = self._literal_hits(tokens)
        if spaced:
            joined = f" {' '.join(tokens)} "
            if _SPACED.search(joined) is not None:
                for run in _SPACED.findall(joined):
                    rule = self.literals.get(run.replace(" ", ""))
                    if rule is not None:
                        best = _worse(rule, best)
        if (
            self.regex is not None
            and self._may_match_regex(low)
            and self.regex.search(low) is not None
        ):
            for compiled, rule in self.regex_rules:
                if compiled.search(low) is not None:
                    best = _worse(rule, best)
        # Nearly always None: one C-speed search, cheaper than setting up finditer. On a hit,
        # finditer from the first match (there is none before it; lookbehinds still see the
        # text before ``pos``) yields exactly the matches a finditer over the whole text would.
        first = _DETECTORS.search(plain)
        if first is not None:
            for match in _DETECTORS.finditer(plain, first.start()):
                name = _DETECTOR_BY_FIRST.get(plain[match.start()], "phone")
                best = _worse(self.detectors[name], best)
        if best is None:
            return ALLOW
        return Verdict(best.action, best.category, best.pattern, best.severity)

    def _may_match_regex(self, low: str) -> bool:
        if self.regex_prefixes is None:
            return True
        # A plain loop, not any(<generator>): this runs on every message, and the generator
        # costs about a tenth of the whole check.
        for prefix in self.regex_prefixes:  # noqa: SIM110
            if prefix in low:
                return True
        return False

    def _literal_hits(self, tokens: list[str]) -> Rule | None:
        best: Rule | None = None
        joined: str | None = None
        for token in self.lookup.intersection(tokens):
            rule = self.literals.get(token)
            if rule is not None:
                best = _worse(rule, best)
            for phrase, phrase_rule in self.phrases.get(token, ()):
                if joined is None:
                    joined = f" {' '.join(tokens)} "
                if f" {phrase} " in joined:
                    best = _worse(phrase_rule, best)
        return best


def compile_rules(rows: Iterable[Rule | Sequence[Any]]) -> Matcher:
    """Compile rows ``(pattern, is_regex, category, severity, action)`` into one matcher.

    Rows come straight from :data:`LOAD_RULES_SQL` (asyncpg records, SQLAlchemy rows) or are
    :class:`Rule` objects. A row that does not compile is skipped and named in ``errors``.
    """
    matcher = Matcher()
    sources: list[str] = []
    for raw in rows:
        try:
            rule = _as_rule(raw)
        except (ValueError, TypeError, IndexError) as exc:
            matcher.errors.append(f"{raw!r}: {exc}")
            continue
        problem = validate_pattern(rule.pattern, rule.is_regex)
        if problem is not None:
            matcher.errors.append(f"{rule.pattern!r}: {problem}")
            continue
        matcher.rule_count += 1
        if rule.pattern.startswith(DETECTOR_PREFIX):
            matcher.detectors[rule.pattern[1:]] = rule
        elif rule.is_regex:
            source = _regex_source(rule.pattern)
            sources.append(source)
            matcher.regex_rules.append((re.compile(source), rule))
        else:
            _add_literal(matcher, _literal_key(rule.pattern), rule)
    payment = matcher.detectors["payment"]
    for word in _PAYMENT_WORDS:
        key = _literal_key(word)
        # An admin's own row for the same word wins over the detector's.
        known = key in matcher.literals or any(
            phrase == key for phrase, _ in matcher.phrases.get(key.split(" ")[0], ())
        )
        if not known:
            _add_literal(matcher, key, payment)
    if sources:
        matcher.regex = re.compile("|".join(sources))
        prefixes = {_required_prefix(rule.pattern) for _, rule in matcher.regex_rules}
        if None not in prefixes and len(prefixes) <= _MAX_REGEX_PREFIXES:
            matcher.regex_prefixes = tuple(sorted(p for p in prefixes if p is not None))
    matcher.lookup = frozenset(matcher.literals) | frozenset(matcher.phrases)
    return matcher


def _add_literal(matcher: Matcher, key: str, rule: Rule) -> None:
    if " " in key:
        first = key.split(" ", 1)[0]
        matcher.phrases.setdefault(first, []).append((key, rule))
        return
    existing = matcher.literals.get(key)
    if existing is None or _rank(rule) > _rank(existing):
        matcher.literals[key] = rule


# --- benchmark: python -m common.moderation --bench -------------------------------------------

_BENCH_MESSAGES: Final = (
    "hey! how was your weekend? i went hiking near the lake and it was honestly amazing",
    "haha that's so funny, we should grab coffee sometime this week if you're free :)",
    "I love that band too!! saw them live in 2019, best concert of my life honestly",
    "what do you do for work? I'm a nurse at the hospital downtown, long shifts lol",
    "call me at 555 123 4567 or text, whatever works better for you tonight ok",
    "sure, my insta is on my profile, check www.example.com for my photography work",
)


def bench_rules(count: int = 200, *, regexes: bool = True) -> list[Rule]:
    """A synthetic list like a real one: mostly words, 5% phrases and (if asked) 5% regexes."""
    rules: list[Rule] = []
    for i in range(count):
        word = "".join(chr(ord("a") + (i * 7 + j * 13) % 26) for j in range(4 + i % 6))
        if i % 20 == 0 and regexes:
            rules.append(Rule(f"{word}\\w*ing", True, "profanity", 2, "warn"))
        elif i % 10 == 0:
            rules.append(Rule(f"{word} {word[::-1]}", False, "harassment", 3, "reject"))
        else:
            rules.append(Rule(word, False, "profanity", 1 + i % 5, "warn" if i % 2 else "reject"))
    return rules


def bench(
    iterations: int = 20_000, rule_count: int = 200, repeat: int = 5, *, regexes: bool = True
) -> dict[str, float]:
    """Cost of one ``check`` on typical ~80-character messages, in µs per message by case.

    CPU time of this thread (not wall time: on a shared machine a descheduled thread would
    count its neighbours' work), the best of ``repeat`` runs, as ``timeit`` reports it.
    """
    matcher = compile_rules(bench_rules(rule_count, regexes=regexes))
    results: dict[str, float] = {}
    cases = {"clean": _BENCH_MESSAGES[:4], "detector_hit": _BENCH_MESSAGES[4:]}
    for name, messages in cases.items():
        check = matcher.check
        rounds = max(iterations // len(messages), 1)
        best = float("inf")
        for _ in range(repeat):
            start = time.thread_time_ns()
            for _ in range(rounds):
                for message in messages:
                    check(message)
            best = min(best, (time.thread_time_ns() - start) / (rounds * len(messages)))
        results[name] = best / 1000
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.moderation")
    parser.add_argument("--bench", action="store_true", help="measure the cost per message")
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-regex", action="store_true", help="words and phrases only")
    args = parser.parse_args(argv)
    if not args.bench:
        parser.print_help()
        return 2
    avg_len = sum(map(len, _BENCH_MESSAGES)) / len(_BENCH_MESSAGES)
    results = bench(args.iterations, args.rules, args.repeat, regexes=not args.no_regex)
    kinds = "words+phrases" if args.no_regex else "words+phrases+5% regex"
    print(f"rules={args.rules} ({kinds}) messages~{avg_len:.0f} chars", end=" ")
    print(f"iterations={args.iterations} best of {args.repeat}")
    for name, micros in results.items():
        print(f"{name}: {micros:.2f} µs/message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
