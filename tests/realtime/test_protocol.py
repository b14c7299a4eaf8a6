"""The sans-I/O protocol core and the code tables: plain calls, no event loop, no services."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgspec
import pytest

from common import wire
from common.codes import (
    RECONNECT_BAND,
    RETRYABLE,
    TERMINAL_BAND,
    Close,
    Err,
    is_reconnect,
    is_terminal,
)
from realtime.domain import Memberships, SendOutcome, Stored, StoredMessage
from realtime.protocol import (
    AuthAction,
    CloseOut,
    Config,
    Out,
    Output,
    PersistRead,
    PersistSend,
    Protocol,
    RefreshAction,
    State,
    SyncAction,
    TokenBucket,
    TypingAction,
)

T0 = 1_000_000.0
CONFIG = Config(node_id="n1", rate_per_s=10, rate_burst=5, max_body_chars=10, reauth_before_s=30)
ME, PEER, BLOCKER = 7, 8, 9


def members(now: float = T0) -> Memberships:
    return Memberships(
        peers={1: (PEER,), 2: (BLOCKER,)}, blocked=frozenset({BLOCKER}), loaded_at=now
    )


def frames(outputs: list[Output]) -> list[dict[str, Any]]:
    return [json.loads(o.data) for o in outputs if isinstance(o, Out)]


def opened(config: Config = CONFIG, expires_in: float = 600) -> Protocol:
    proto = Protocol(config, session="n1.1", now=T0)
    proto.receive_text('{"type":"auth","token":"t"}', T0)
    assert proto.take() == [AuthAction("t", None, refresh=False)]
    proto.auth_succeeded(
        user_id=ME, expires_at=T0 + expires_in, memberships=members(), rid=None, now=T0
    )
    (ready,) = frames(proto.take())
    assert ready["type"] == "ready" and ready["user"] == ME and ready["node"] == "n1"
    return proto


def error_of(proto: Protocol, raw: str | dict[str, Any], now: float = T0) -> dict[str, Any]:
    proto.receive_text(raw if isinstance(raw, str) else json.dumps(raw), now)
    (frame,) = frames(proto.take())
    assert frame["type"] == "error" and proto.state is State.OPEN
    return frame


def test_the_code_tables_are_banded_and_distinct() -> None:
    assert len({int(c) for c in Close}) == len(Close)
    for code in Close:
        # Our own codes sit in one band; a standard code (1012 drain) means "reconnect" too.
        banded = (code in RECONNECT_BAND) != (code in TERMINAL_BAND)
        assert banded or (code < 4000 and is_reconnect(code) and not is_terminal(code)), code
    assert is_reconnect(Close.SLOW_CONSUMER) and not is_reconnect(Close.REVOKED)
    assert len({e.value for e in Err}) == len(Err)
    assert Err.DB_UNAVAILABLE in RETRYABLE and Err.BLOCKED not in RETRYABLE


def test_header_token_is_verified_first_and_frames_before_auth_close() -> None:
    proto = Protocol(CONFIG, session="s", now=T0, header_token="h")
    assert proto.take() == [AuthAction("h", None, refresh=False)]
    proto = Protocol(CONFIG, session="s", now=T0)
    proto.receive_text('{"type":"ping"}', T0)
    assert proto.take() == [CloseOut(Close.PROTOCOL_VIOLATION, "auth first")]
    proto.receive_text('{"type":"ping"}', T0)
    assert proto.take() == []  # closed: later input is ignored


def test_auth_timeout_fires_at_its_deadline_only() -> None:
    proto = Protocol(CONFIG, session="s", now=T0)
    assert proto.next_deadline() == T0 + CONFIG.auth_timeout_s
    proto.tick(T0 + CONFIG.auth_timeout_s - 0.01)
    assert proto.take() == []
    proto.tick(T0 + CONFIG.auth_timeout_s)
    assert proto.take() == [CloseOut(Close.AUTH_TIMEOUT, "no token in time")]


def test_failed_auth_closes_with_the_given_code() -> None:
    proto = Protocol(CONFIG, session="s", now=T0, header_token="bad")
    proto.take()
    proto.auth_failed(Close.REVOKED, "revoked")
    assert proto.take() == [CloseOut(Close.REVOKED, "revoked")]


def test_binary_frames_are_protocol_abuse() -> None:
    proto = opened()
    proto.receive_binary(T0)
    (close,) = proto.take()
    assert isinstance(close, CloseOut) and close.code == Close.PROTOCOL_VIOLATION


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{nope", Err.BAD_JSON),
        ("[]", Err.BAD_JSON),
        ('"text"', Err.BAD_JSON),
        ({"type": "dance"}, Err.UNKNOWN_TYPE),
        ({"cid": 1}, Err.UNKNOWN_TYPE),
        ({"type": "send", "cid": 1, "body": "x"}, Err.BAD_FIELD),
        ({"type": "send", "cid": "1", "cmid": "a", "body": "x"}, Err.BAD_FIELD),
        ({"type": "send", "cid": 1, "cmid": "a", "body": "x", "is_admin": True}, Err.BAD_FIELD),
        ({"type": "send", "cid": 1, "cmid": "", "body": "x"}, Err.BAD_FIELD),
        ({"type": "send", "cid": 1, "cmid": "a" * 65, "body": "x"}, Err.BAD_FIELD),
        ({"type": "send", "cid": 1, "cmid": "a", "body": "x", "kind": "system"}, Err.BAD_FIELD),
        ({"type": "send", "cid": 1, "cmid": "a", "body": "nul\u0000"}, Err.BAD_FIELD),
        ({"type": "send", "cid": 1, "cmid": "a", "body": "x" * 11}, Err.BODY_TOO_LONG),
        ({"type": "send", "cid": 1, "cmid": "a", "body": "x" * 16_001}, Err.BODY_TOO_LONG),
        ({"type": "read", "cid": 1, "seq": -1}, Err.BAD_FIELD),
        ({"type": "send", "cid": 3, "cmid": "a", "body": "x"}, Err.NOT_MEMBER),
        ({"type": "send", "cid": 2, "cmid": "a", "body": "x"}, Err.BLOCKED),
        ({"type": "typing", "cid": 2}, Err.BLOCKED),
        ({"type": "read", "cid": 3, "seq": 1}, Err.NOT_MEMBER),
    ],
)
def test_bad_input_is_an_error_frame_never_an_exception(raw: Any, code: Err) -> None:
    error = error_of(opened(), raw)
    assert (error["code"], error["retryable"]) == (code.value, code in RETRYABLE)


def test_errors_echo_the_request_id() -> None:
    error = error_of(opened(), {"type": "send", "cid": 3, "cmid": "a", "body": "x", "rid": "q9"})
    assert error["rid"] == "q9"


def test_a_valid_send_becomes_a_persist_action_and_its_outcome_an_ack() -> None:
    proto = opened()
    proto.receive_text('{"type":"send","cid":1,"cmid":"c-1","body":"hello","rid":"r"}', T0)
    (action,) = proto.take()
    assert isinstance(action, PersistSend)
    request = action.request
    assert (request.sender, request.cid, request.peers, request.kind) == (ME, 1, (PEER,), "text")
    assert proto.inflight == 1
    proto.send_finished(SendOutcome(request, proto_reply, Stored(id=5, seq=3, time_ms=9, dup=True)))
    (ack,) = frames(proto.take())
    assert ack == {
        "type": "ack",
        "cmid": "c-1",
        "id": 5,
        "cid": 1,
        "seq": 3,
        "time": 9,
        "dup": True,
        "rid": "r",
    }
    assert proto.inflight == 0
    proto.receive_text('{"type":"send","cid":1,"cmid":"c-2","body":"x"}', T0)
    (action,) = proto.take()
    assert isinstance(action, PersistSend)
    proto.send_finished(SendOutcome(action.request, proto_reply, error=Err.DB_UNAVAILABLE))
    (error,) = frames(proto.take())
    assert (error["code"], error["retryable"]) == ("db_unavailable", True)


class _Reply:
    def send_finished(self, outcome: Any) -> None: ...

    def read_finished(self, outcome: Any) -> None: ...


proto_reply = _Reply()


def test_unknown_conversation_refreshes_memberships_once_then_retries() -> None:
    proto = opened()
    later = T0 + CONFIG.membership_refresh_s
    proto.receive_text('{"type":"send","cid":4,"cmid":"a","body":"x"}', later)
    (refresh,) = proto.take()
    assert isinstance(refresh, RefreshAction)
    fresh = Memberships(peers={4: (PEER,)}, loaded_at=later)
    proto.memberships_loaded(fresh, refresh.retry, later)
    (action,) = proto.take()
    assert isinstance(action, PersistSend) and action.request.cid == 4
    # Right after a refresh an unknown id is answered at once, without asking the database.
    assert error_of(proto, {"type": "read", "cid": 5, "seq": 1}, later)["code"] == "not_member"
    proto.receive_text('{"type":"read","cid":5,"seq":1,"rid":"z"}', later + 5)
    (refresh,) = proto.take()
    assert isinstance(refresh, RefreshAction)
    proto.memberships_loaded(None, refresh.retry, later + 5)
    assert frames(proto.take())[0]["code"] == "db_unavailable"


def test_the_token_bucket_limits_frames_and_refills() -> None:
    proto = opened()
    for _ in range(CONFIG.rate_burst):
        proto.receive_text('{"type":"ping"}', T0)
    assert all(f["type"] == "pong" for f in frames(proto.take()))
    assert error_of(proto, '{"type":"ping","rid":"p"}')["code"] == "rate_limited"
    proto.receive_text('{"type":"ping"}', T0 + 1.5 / CONFIG.rate_per_s)
    assert frames(proto.take())[0]["type"] == "pong"
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.take(0) and not bucket.take(0.5) and bucket.take(1.0)


def test_unacknowledged_sends_are_bounded() -> None:
    proto = opened(dataclasses.replace(CONFIG, rate_burst=100, max_inflight=2))
    for i in range(2):
        proto.receive_text(json.dumps({"type": "send", "cid": 1, "cmid": f"c{i}", "body": "x"}), T0)
    assert all(isinstance(o, PersistSend) for o in proto.take())
    assert error_of(proto, {"type": "send", "cid": 1, "cmid": "c3", "body": "x"})["code"] == (
        "rate_limited"
    )


def test_reauth_notice_then_lapse_unless_refreshed() -> None:
    proto = opened(expires_in=100)
    assert proto.next_deadline() == T0 + 70
    proto.tick(T0 + 70)
    assert frames(proto.take()) == [{"type": "reauth", "expires_at": int((T0 + 100) * 1000)}]
    assert proto.next_deadline() == T0 + 100
    proto.receive_text('{"type":"auth","token":"new","rid":"r2"}', T0 + 80)
    assert proto.take() == [AuthAction("new", "r2", refresh=True)]
    proto.auth_succeeded(user_id=ME, expires_at=T0 + 500, memberships=None, rid="r2", now=T0 + 80)
    assert frames(proto.take())[0]["type"] == "ready"
    proto.tick(T0 + 101)
    assert proto.take() == [] and proto.is_open
    proto.tick(T0 + 500)
    assert proto.take() == [CloseOut(Close.TOKEN_LAPSED, "token expired")]


def test_a_refresh_for_another_user_closes() -> None:
    proto = opened()
    proto.auth_succeeded(user_id=ME + 1, expires_at=T0 + 900, memberships=None, rid=None, now=T0)
    assert proto.take() == [CloseOut(Close.BAD_TOKEN, "token for another user")]


def test_typing_goes_to_peers_once_per_interval_and_read_is_persisted() -> None:
    proto = opened()
    proto.receive_text('{"type":"typing","cid":1}', T0)
    (action,) = proto.take()
    assert isinstance(action, TypingAction) and action.peers == (PEER,)
    assert json.loads(action.data) == {
        "type": "typing",
        "cid": 1,
        "user": ME,
        "on": True,
        "ttl_ms": 6000,
    }
    proto.receive_text('{"type":"typing","cid":1}', T0 + 0.1)
    assert proto.take() == []
    proto.receive_text('{"type":"typing","cid":1,"on":false}', T0 + 0.2)
    assert isinstance(proto.take()[0], TypingAction)
    proto.receive_text('{"type":"read","cid":1,"seq":4}', T0)
    (read,) = proto.take()
    assert isinstance(read, PersistRead) and (read.request.seq, read.request.peers) == (4, (PEER,))


def test_sync_positions_fill_in_every_conversation_and_report_foreign_ones() -> None:
    proto = opened()
    proto.receive_text('{"type":"sync","convs":{"1":5,"99":3},"rid":"s"}', T0)
    (action,) = proto.take()
    assert action == SyncAction({1: 5, 2: 0}, CONFIG.sync_page_size, "s", (99,))
    proto.receive_text('{"type":"sync","convs":{"1":5},"all":false}', T0)
    (action,) = proto.take()
    assert isinstance(action, SyncAction) and action.positions == {1: 5}
    deleted = StoredMessage(1, 6, 60, PEER, "c", "secret", "text", 1, deleted=True)
    proto.sync_finished([deleted], end=True, rid="s", gone=(99,))
    (page,) = frames(proto.take())
    assert page["end"] is True and page["gone"] == [99]
    # As the REST history answers: the place is kept, the body is null.
    assert (page["msgs"][0]["body"], page["msgs"][0]["deleted"]) == (None, True)


def test_wire_limits_are_enforced_while_decoding() -> None:
    with pytest.raises(msgspec.ValidationError):
        wire.client_decoder.decode(json.dumps({"type": "auth", "token": "x" * 5000}))
    with pytest.raises(msgspec.ValidationError):
        wire.client_decoder.decode(
            json.dumps({"type": "sync", "convs": {str(i): 0 for i in range(1, 1002)}})
        )
    frame = wire.client_decoder.decode(b'{"type":"typing","cid":3}')
    assert frame == wire.Typing(cid=3, on=True)
