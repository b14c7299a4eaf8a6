"""The send path in one direction, without services: submit answers at once by its value, and
after a commit the fan-out goes out before the ack.

The parts are the real ones (node, moderation answer, batch writer queue, after-commit, fan-out,
hub); only the broker, and the sockets behind the hub, are test doubles that record.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from common.codes import Err
from common.tokens import KeySet
from realtime.aftercommit import AfterCommit
from realtime.batch import BatchWriter
from realtime.broker import Broker, Kind, Scope, Watch
from realtime.domain import (
    Memberships,
    ReadOutcome,
    ReadRequest,
    Replier,
    SendOutcome,
    SendRequest,
    Stored,
)
from realtime.fanout import Fanout
from realtime.hub import Hub
from realtime.node import Node, SendGate
from realtime.notices import MessageNotices
from realtime.presence import Presence
from realtime.protocol import Config
from realtime.safetystate import SafetyState
from realtime.store import Store

SENDER, PEER, CID = 1, 2, 10


@dataclass
class Recorder:
    """One ordered log of everything the doubles saw."""

    events: list[tuple[str, Any]] = field(default_factory=list)


@dataclass(eq=False)
class FakeSocket:
    """A :class:`realtime.sockets.LocalSocket` and :class:`Replier` that records."""

    name: str
    user_id: int
    log: Recorder
    memberships: Memberships | None = None

    def write(self, data: bytes) -> None:
        self.log.events.append((self.name, json.loads(data)["type"]))

    def close(self, code: int, reason: str) -> None:
        self.log.events.append((self.name, "close"))

    def conversation_closed(self, cid: int) -> None: ...

    def peer_blocked(self, peer: int) -> tuple[int, ...]:
        return ()

    def conversation_opened(self, cid: int, peer: int) -> None: ...

    def token_revoked(self, code: int, reason: str, *, below: int | None = None) -> None: ...

    def memberships_reloaded(self, memberships: Memberships) -> None: ...

    def send_finished(self, outcome: SendOutcome) -> None:
        self.log.events.append((self.name, ("answer", outcome.error)))

    def read_finished(self, outcome: ReadOutcome) -> None:
        self.log.events.append((self.name, ("read answer", outcome.error)))


@dataclass
class FakeBroker:
    log: Recorder

    def publish(
        self,
        users: Sequence[int],
        data: bytes,
        watch: Watch | None = None,
        *,
        kind: Kind = "frame",
        scope: Scope = (0, 0),
    ) -> None:
        self.log.events.append(("broker", json.loads(data)["type"]))


@dataclass
class Parts:
    node: Node
    writer: BatchWriter
    log: Recorder
    sender: FakeSocket
    other_device: FakeSocket
    peer: FakeSocket


def build(send_gate: SendGate, *, max_queue: int = 100) -> Parts:
    log = Recorder()
    safety = SafetyState()
    hub = Hub(max_per_user=4, gate=safety.admits)
    broker = cast(Broker, FakeBroker(log))
    notices = MessageNotices(cast(Any, None), timeout_s=1.0, is_local=hub.has)
    fanout = Fanout(hub=hub, broker=broker, presence=cast(Presence, None))
    after = AfterCommit(fanout=fanout, notices=notices, commit_seconds=lambda: 0.001)
    writer = BatchWriter(
        cast(Any, None),
        batch_max=10,
        timeout_s=1.0,
        on_done=after.on_outcomes,
        max_queue=max_queue,
    )
    node = Node(
        config=Config(),
        keys=KeySet(),
        audience="aud",
        issuer="iss",
        hub=hub,
        broker=broker,
        store=cast(Store, None),
        writer=writer,
        after_commit=after,
        fanout=fanout,
        presence=cast(Presence, None),
        safety=safety,
        send_gate=send_gate,
        on_account=lambda _user, _state: None,
        high_water=1 << 20,
    )
    sender = FakeSocket("sender", SENDER, log)
    other_device = FakeSocket("sender's other device", SENDER, log)
    peer = FakeSocket("peer", PEER, log)
    for sock in (sender, other_device, peer):
        assert hub.add(sock) is not None
    return Parts(node, writer, log, sender, other_device, peer)


def a_send(cmid: str = "c1") -> SendRequest:
    return SendRequest(SENDER, CID, cmid, "hello", "text", None, (PEER,))


def passes(_request: SendRequest, _reply: Replier) -> Err | bool:
    return False


@pytest.mark.parametrize(
    ("answer", "code"),
    [(Err.CONTENT_REJECTED, Err.CONTENT_REJECTED), (Err.RATE_LIMITED, Err.RATE_LIMITED)],
)
def test_a_gate_refusal_is_the_value_of_submit_not_a_call_back(answer: Err, code: Err) -> None:
    parts = build(lambda _request, _reply: answer)
    outcome = parts.node.submit(a_send(), parts.sender)
    assert isinstance(outcome, SendOutcome) and outcome.error is code
    assert outcome.reply is parts.sender
    assert parts.log.events == [] and parts.writer.pending == 0


def test_a_full_writer_queue_is_the_value_of_submit_not_a_call_back() -> None:
    parts = build(passes, max_queue=1)
    assert parts.node.submit(a_send("c1"), parts.sender) is None
    read = ReadRequest(SENDER, CID, 1, None, (PEER,))
    for request in (a_send("c2"), read):
        outcome = parts.node.submit(request, parts.sender)
        assert outcome is not None and outcome.error is Err.RATE_LIMITED
        assert outcome.request is request
    assert parts.log.events == [] and parts.writer.pending == 1
    # Outside submit, the writer's outcomes are delivered as usual.
    parts.writer.on_done([SendOutcome(a_send("c3"), parts.sender, error=Err.DB_UNAVAILABLE)])
    assert parts.log.events == [("sender", ("answer", Err.DB_UNAVAILABLE))]


def test_a_send_the_gate_holds_is_neither_queued_nor_answered() -> None:
    parts = build(lambda _request, _reply: True)
    assert parts.node.submit(a_send(), parts.sender) is None
    assert parts.writer.pending == 0 and parts.log.events == []


def test_after_the_commit_every_member_socket_but_the_senders_gets_the_msg_before_the_ack() -> None:
    parts = build(passes)
    stored = SendOutcome(a_send(), parts.sender, Stored(id=5, seq=1, time_ms=1))
    parts.writer.on_done([stored])
    events = parts.log.events
    assert events[-1] == ("sender", ("answer", None))
    assert sorted(events[:-1], key=str) == sorted(
        [("sender's other device", "msg"), ("peer", "msg"), ("broker", "msg")], key=str
    )


def test_a_committed_receipt_is_answered_then_shown_to_the_peers() -> None:
    parts = build(passes)
    request = ReadRequest(SENDER, CID, 1, None, (PEER,))
    parts.writer.on_done([ReadOutcome(request, parts.sender, seq=1)])
    assert parts.log.events == [
        ("sender", ("read answer", None)),
        ("peer", "read"),
        ("broker", "read"),
    ]
