"""Bad input against a real node: random frame sequences (hypothesis) and slow handshakes.

Any sequence of frames (JSON of every shape, wrong types, huge numbers, deep nesting, invalid
UTF-8 in a text frame, binary, oversized and fragmented messages) must get well-formed server
frames (``error`` with a non-``internal`` code, or a normal answer) or a close with a code that
names the abuse; never an unhandled exception (the node's log is checked for errors and
tracebacks) and never trouble for other connections (a bystander pair on the two nodes keeps
chatting after every example). Handshake abuse already covered in ``test_auth.py`` (no auth
frame, foreign Origin, token in the query string) is not repeated; slow headers are added here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from common import wire
from common.codes import Close, Err
from tests.faults.results import record
from tests.realtime.conftest import Client, Nodes, client
from tests.support import ROOT, TICK

MAX_FRAME = 64 * 1024
#: Close codes that name an abuse the sequence contained; anything else is a failure.
ABUSE_CLOSES = {
    1007: "invalid UTF-8 in a text frame",
    1009: "message over max_frame_bytes",
    Close.PROTOCOL_VIOLATION: "binary frame",
    Close.BAD_TOKEN: "an auth frame (a refresh) with a token that does not verify",
}


@dataclass(frozen=True)
class Frame:
    """One thing a client can put on the wire; ``abuse`` names the close it may earn."""

    kind: str  # "text", "bytes_as_text", "binary", "fragments"
    data: Any
    abuse: int | None = None


@dataclass
class Cast:
    fuzzers: list[str]  # tokens; the first two share conversation ``cid``
    cid: int
    bystanders: int  # the bystanders' conversation
    alice: str  # bystander tokens
    bob: str


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["type", "cid", "cmid", "body", "kind", "seq", "on", "convs", "all", "token", "rid", "x"]
)
type_names = st.sampled_from(
    ["auth", "send", "read", "typing", "sync", "ping", "shout", "", "SEND"]
)


@st.composite
def frame_objects(draw: st.DrawFn, cid: int) -> dict[str, Any]:
    """Mostly plausible frames with wrong, missing, extra or extreme fields."""
    obj: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        obj["type"] = draw(type_names | json_value)
    for name in draw(st.lists(field_names, max_size=5)):
        obj[name] = draw(
            json_value | st.sampled_from([cid, 0, -1, 2**63, 2**64, 10**30, "1", [cid], {"a": 1}])
        )
    return obj


def frames(cid: int) -> st.SearchStrategy[Frame]:
    big = st.integers(min_value=1, max_value=4).map(lambda n: "9" * (n * 2000))
    deep = st.integers(min_value=10, max_value=5000).map(lambda n: "[" * n + "]" * n)
    texts = st.one_of(
        frame_objects(cid).map(json.dumps),
        st.text(max_size=200),
        big.map(lambda digits: f'{{"type":"read","cid":{digits},"seq":1}}'),
        deep,
        st.text(min_size=1, max_size=60).map(lambda t: json.dumps({"type": "auth", "token": t})),
        st.integers(min_value=990, max_value=1010).map(
            lambda n: json.dumps({"type": "sync", "convs": {str(i + 1): 0 for i in range(n)}})
        ),
        # Escapes JSON allows but PostgreSQL text does not: lone surrogates, NUL.
        st.sampled_from(["\\ud800", "\\udfff", "a\\ud83d", "\\u0000"]).map(
            lambda body: (
                f'{{"type":"send","cid":{cid},"cmid":"esc{time.time_ns()}","body":"{body}"}}'
            )
        ),
    )
    return st.one_of(
        texts.map(lambda t: Frame("text", t, abuse=_text_abuse(t))),
        st.binary(min_size=1, max_size=64).map(
            lambda b: Frame("bytes_as_text", b, abuse=_utf8_abuse(b))
        ),
        st.binary(max_size=64).map(lambda b: Frame("binary", b, abuse=Close.PROTOCOL_VIOLATION)),
        st.integers(min_value=MAX_FRAME + 1, max_value=MAX_FRAME + 4096).map(
            lambda n: Frame("text", "x" * n, abuse=1009)
        ),
        st.tuples(texts, st.integers(min_value=1, max_value=7)).map(_fragmented),
        st.integers(min_value=2, max_value=8).map(
            lambda n: Frame(
                "fragments", ["y" * (MAX_FRAME // 4)] * n, abuse=1009 if n > 4 else None
            )
        ),
    )


def _text_abuse(text: str) -> int | None:
    """A well-formed ``auth`` frame is a token refresh: a fuzzed token closes with 4100."""
    try:
        frame = wire.client_decoder.decode(text)
    except msgspec.MsgspecError:
        return None
    return Close.BAD_TOKEN if isinstance(frame, wire.Auth) else None


def _utf8_abuse(data: bytes) -> int | None:
    try:
        data.decode()
    except UnicodeDecodeError:
        return 1007
    return None


def _fragmented(args: tuple[str, int]) -> Frame:
    text, parts = args
    size = max(1, len(text) // parts)
    pieces = [text[i : i + size] for i in range(0, len(text), size)] or [text]
    return Frame("fragments", pieces, abuse=_text_abuse(text))


async def _put(c: Client, frame: Frame) -> None:
    if frame.kind == "text":
        await c.ws.send(frame.data)
    elif frame.kind == "bytes_as_text":
        await c.ws.send(frame.data, text=True)
    elif frame.kind == "binary":
        await c.ws.send(frame.data or b"\x00")
    else:
        await c.ws.send(frame.data)


def _node_log(url: str) -> Any:
    port = url.rsplit(":", 1)[1].strip("/")
    return ROOT / ".data" / "test-logs" / f"realtime-{port}.log"


def _new_faults(url: str, offset: int) -> list[str]:
    with _node_log(url).open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    return [line for line in lines if '"level": "error"' in line or "Traceback" in line]


@pytest.fixture(scope="module")
async def cast(db: asyncpg.Pool[asyncpg.Record], make_token: Any) -> Cast:
    ids = []
    for i in range(6):
        uid = await db.fetchval(
            "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id",
            f"fuzz{i}-{time.time_ns()}@example.test",
        )
        ids.append(int(uid))
    cid = int(await db.fetchval("INSERT INTO conversations DEFAULT VALUES RETURNING id"))
    bystanders = int(await db.fetchval("INSERT INTO conversations DEFAULT VALUES RETURNING id"))
    await db.executemany(
        "INSERT INTO conversation_members (conversation_id, user_id) VALUES ($1, $2)",
        [(cid, ids[0]), (cid, ids[1]), (bystanders, ids[4]), (bystanders, ids[5])],
    )
    return Cast(
        fuzzers=[make_token(u) for u in ids[:4]],
        cid=cid,
        bystanders=bystanders,
        alice=make_token(ids[4]),
        bob=make_token(ids[5]),
    )


async def _run_sequence(
    url: str, token: str, sequence: list[Frame]
) -> tuple[list[dict[str, Any]], int | None]:
    """Send ``sequence`` then a ping; collect answers until the pong or a close."""
    c = await client(url, token, max_size=2**20)
    received: list[dict[str, Any]] = []
    code: int | None = None
    try:
        for frame in sequence:
            await _put(c, frame)
        await c.send(type="ping", rid="fuzz-end")
        async with asyncio.timeout(100 * TICK):
            while True:
                raw = await c.ws.recv()
                decoded = wire.server_decoder.decode(raw)  # well-formed, or this raises
                received.append(msgspec.to_builtins(decoded))
                if isinstance(decoded, wire.Pong) and decoded.rid == "fuzz-end":
                    break
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else 1006
    finally:
        await c.ws.close()
        await c.ws.wait_closed()
    return received, code


@dataclass
class Watch:
    """Where the nodes' logs stood before the fuzzing, and what the examples saw."""

    offsets: dict[str, int]
    alice: Client
    bob: Client
    examples: int = 0
    closed: int = 0
    errors: int = 0


@pytest.fixture(scope="module")
async def watch(nodes: Nodes, cast: Cast) -> AsyncIterator[Watch]:
    offsets = {url: _node_log(url).stat().st_size for url in (nodes.a, nodes.b)}
    w = Watch(offsets, await client(nodes.a, cast.alice), await client(nodes.b, cast.bob))
    yield w
    await w.alice.close()
    await w.bob.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), which=st.integers(0, 3), on_a=st.booleans())
async def test_random_frame_sequences_get_errors_or_a_named_close_and_harm_nobody(
    nodes: Nodes, cast: Cast, watch: Watch, data: st.DataObject, which: int, on_a: bool
) -> None:
    sequence = data.draw(st.lists(frames(cast.cid), min_size=1, max_size=6), label="sequence")
    url = nodes.a if on_a else nodes.b
    received, code = await _run_sequence(url, cast.fuzzers[which], sequence)
    watch.examples += 1
    for frame in received:
        if frame["type"] == "error":
            watch.errors += 1
            assert frame["code"] != Err.INTERNAL, (sequence, frame)
    # Without an abusive frame the socket stays open. With some, the close names one of them:
    # usually the first, but frames the client pipelined after it may be read (and refused by
    # the library, e.g. 1009) before the node's own close goes out.
    abuses = {f.abuse for f in sequence if f.abuse is not None}
    assert (code is None) == (not abuses), (code, abuses, received[-3:])
    assert code is None or code in abuses, (code, abuses)
    if code is None:
        assert received and received[-1]["type"] == "pong"
    else:
        watch.closed += 1
        assert code in ABUSE_CLOSES
    # The bystanders on both nodes keep chatting.
    body = f"still here {watch.examples}"
    cmid = await watch.alice.send_msg(cast.bystanders, body)
    await watch.alice.expect("ack", cmid=cmid)
    assert (await watch.bob.expect("msg", cmid=cmid))["body"] == body


async def test_the_fuzzing_logged_no_error_and_exercised_both_outcomes(
    nodes: Nodes, watch: Watch
) -> None:
    """Runs after the fuzzing (file order): no traceback or error line in either node's log."""
    assert watch.examples > 0, "run this module whole: the fuzz test goes first"
    for url, offset in watch.offsets.items():
        faults = _new_faults(url, offset)
        assert not faults, faults[:3]
    assert watch.closed > 0 and watch.errors > 0, watch
    record("fuzz", examples=watch.examples, closed=watch.closed, error_frames=watch.errors)


async def test_slow_headers_are_cut_off_within_the_open_timeout(nodes: Nodes, cast: Cast) -> None:
    """Slowloris: sockets trickling header lines are closed by the node (``open_timeout``,
    10 s in ``websockets``), and meanwhile the node keeps serving everyone else."""
    port = int(nodes.a.rsplit(":", 1)[1].strip("/"))
    links = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
    started = time.monotonic()
    for _, writer in links:
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    async def trickle(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
        for n in range(40):
            try:
                writer.write(f"X-Slow-{i}-{n}: y\r\n".encode())
                await writer.drain()
                if await asyncio.wait_for(reader.read(1024), 20 * TICK) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        writer.close()
        return time.monotonic() - started

    tasks = [asyncio.create_task(trickle(i, r, w)) for i, (r, w) in enumerate(links)]
    # Meanwhile a normal client connects and is served.
    c = await client(nodes.a, cast.alice)
    assert (await c.request(type="ping"))["type"] == "pong"
    await c.close()
    lasted = await asyncio.gather(*tasks)
    assert max(lasted) < 300 * TICK, f"slow sockets lived {max(lasted):.1f}s"
