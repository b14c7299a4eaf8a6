"""Safety events as inputs of the sans-I/O protocol, and the node-wide gate: no loop, no services.

A block, an unmatch, a match and a token revocation reach a socket only through the
socket-state seam (``realtime/sockets.py``); here they are fed to a bare :class:`Protocol` and
the frames it answers with are read back, as the connection would write them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from common.codes import Close
from realtime.domain import Memberships
from realtime.protocol import CloseOut, Config, Out, Output, PersistSend, Protocol, TypingAction
from realtime.safetystate import REMEMBER_MAX, SafetyState, remember

T0 = 1_000_000.0
CONFIG = Config(node_id="n1", rate_per_s=100, rate_burst=100)
ME, PEER, OTHER, NEWCOMER = 7, 8, 9, 10
VERSION = 3


def opened() -> Protocol:
    """A socket of ``ME`` with a conversation with ``PEER`` (1) and one with ``OTHER`` (2)."""
    proto = Protocol(CONFIG, session="n1.1", now=T0)
    proto.receive_text('{"type":"auth","token":"t"}', T0)
    proto.take()
    memberships = Memberships(peers={1: (PEER,), 2: (OTHER,)}, loaded_at=T0)
    proto.auth_succeeded(
        user_id=ME,
        expires_at=T0 + 600,
        memberships=memberships,
        rid=None,
        now=T0,
        token_version=VERSION,
    )
    proto.take()
    return proto


def outputs_of(proto: Protocol, frame: dict[str, Any]) -> list[Output]:
    proto.receive_text(json.dumps(frame), T0)
    return proto.take()


def error_code(proto: Protocol, frame: dict[str, Any]) -> str:
    (out,) = outputs_of(proto, frame)
    assert isinstance(out, Out), out
    decoded: dict[str, Any] = json.loads(out.data)
    assert decoded["type"] == "error", decoded
    return str(decoded["code"])


def send(cid: int, cmid: str = "c1") -> dict[str, Any]:
    return {"type": "send", "cid": cid, "cmid": cmid, "body": "hi"}


def test_a_block_ends_the_conversations_with_that_peer_and_only_those() -> None:
    proto = opened()
    assert proto.peer_blocked(PEER) == (1,)
    assert error_code(proto, send(1)) == "not_member"
    assert error_code(proto, {"type": "typing", "cid": 1, "on": True}) == "not_member"
    assert error_code(proto, {"type": "read", "cid": 1, "seq": 1}) == "not_member"
    (other,) = outputs_of(proto, send(2))
    assert isinstance(other, PersistSend) and other.request.peers == (OTHER,)
    # A second block of the same peer has nothing left to end.
    assert proto.peer_blocked(PEER) == ()


def test_a_blocked_peer_in_a_shared_conversation_is_refused_as_blocked() -> None:
    proto = opened()
    proto.conversation_opened(3, NEWCOMER)
    assert proto.memberships is not None
    proto.memberships.peers[4] = (PEER, NEWCOMER)  # a group, as a reload could bring
    proto.peer_blocked(NEWCOMER)
    assert 4 not in proto.memberships.peers and 3 not in proto.memberships.peers
    proto.memberships.peers[5] = (OTHER, NEWCOMER)
    assert error_code(proto, send(5)) == "blocked"


def test_a_match_with_a_blocked_peer_opens_nothing() -> None:
    proto = opened()
    proto.peer_blocked(PEER)
    proto.conversation_opened(3, PEER)
    assert error_code(proto, send(3)) == "not_member"


def test_an_unmatch_closes_that_conversation_and_a_match_opens_one_without_a_reload() -> None:
    proto = opened()
    proto.conversation_closed(2)
    assert error_code(proto, send(2)) == "not_member"
    (kept,) = outputs_of(proto, send(1))
    assert isinstance(kept, PersistSend)
    proto.conversation_opened(3, NEWCOMER)
    (typing,) = outputs_of(proto, {"type": "typing", "cid": 3, "on": True})
    assert isinstance(typing, TypingAction) and typing.peers == (NEWCOMER,)
    # Closing a conversation twice, or one never known, is harmless.
    proto.conversation_closed(2)
    proto.conversation_closed(99)
    assert proto.memberships is not None and set(proto.memberships.peers) == {1, 3}


def test_safety_inputs_before_memberships_are_loaded_change_nothing() -> None:
    proto = Protocol(CONFIG, session="n1.2", now=T0)
    assert proto.peer_blocked(PEER) == ()
    proto.conversation_closed(1)
    proto.conversation_opened(3, PEER)
    assert proto.memberships is None and proto.take() == []


def test_a_token_bump_closes_only_a_socket_whose_token_is_older() -> None:
    proto = opened()
    assert proto.token_revoked(Close.REVOKED, "token revoked", below=VERSION) is None
    assert proto.is_open
    closing = proto.token_revoked(Close.REVOKED, "token revoked", below=VERSION + 1)
    assert closing == CloseOut(Close.REVOKED, "token revoked")
    assert not proto.is_open
    # Closed once: a later revocation or input asks for nothing more.
    assert proto.token_revoked(Close.ACCOUNT_DISABLED, "account disabled") is None
    assert outputs_of(proto, send(1)) == []


def test_a_ban_closes_whatever_the_token_version() -> None:
    proto = opened()
    closing = proto.token_revoked(Close.ACCOUNT_DISABLED, "account disabled")
    assert closing == CloseOut(Close.ACCOUNT_DISABLED, "account disabled")
    assert proto.take() == []  # answered by the return value, not queued


def test_a_reauth_with_a_newer_token_survives_the_bump_that_asked_for_it() -> None:
    proto = opened()
    proto.auth_succeeded(
        user_id=ME, expires_at=T0 + 900, memberships=None, rid=None, now=T0, token_version=5
    )
    proto.take()
    assert proto.token_revoked(Close.REVOKED, "token revoked", below=5) is None
    assert proto.is_open


@dataclass
class FakeSocket:
    """What the gate reads of a socket (:class:`realtime.sockets.SocketView`)."""

    user_id: int
    memberships: Memberships | None = None


def test_the_gate_stops_frames_of_closed_conversations_and_blocked_pairs_either_way() -> None:
    state = SafetyState()
    me = FakeSocket(ME, Memberships(peers={1: (PEER,)}, blocked=frozenset({OTHER})))
    assert state.admits(me, 1, PEER)
    remember(state.closed, 1)
    assert not state.admits(me, 1, PEER)
    assert state.admits(me, 2, PEER)
    remember(state.blocks, (PEER, ME))
    assert not state.admits(me, 2, PEER)
    # The socket's own block set counts too, and a frame with no author passes.
    assert not state.admits(me, 3, OTHER)
    assert state.admits(me, 3, 0)


def test_the_node_wide_memory_keeps_the_newest_entries() -> None:
    table: dict[int, None] = {}
    for cid in range(REMEMBER_MAX + 2):
        remember(table, cid)
    remember(table, 2)  # touched again: now the newest
    assert len(table) == REMEMBER_MAX
    assert 0 not in table and 1 not in table and next(reversed(table)) == 2
