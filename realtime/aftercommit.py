"""After the commit: each outcome of the batch writer becomes deliveries and an answer.

Owns what happens once a batch is durable, in this order per outcome: a stored message is
encoded once as a ``msg`` frame and fanned out (:class:`~realtime.fanout.Fanout`: the members'
local sockets, the sender's other devices included, and the broker for other nodes), *then*
the sender's socket gets its ``ack`` (fan-out first: an ack means the live delivery is already
on its way; the ``after_fanout_before_ack`` failpoint sits between); a committed read receipt
is answered, fanned out and handed to the offline notifications. New messages whose
recipients have no socket here carry a *watch* to the broker (:mod:`realtime.notices`). It
also observes each batch's size, commit time and send-to-ack latency.

:meth:`AfterCommit.on_outcomes` is the writer's ``on_done``. The writer also hands it a refusal
at once, inside ``submit``, when its queue is full; :meth:`AfterCommit.submit` catches that one
and returns it, so the connection that submitted gets its answer as a return value and is never
called back before its own call returns.

It must not await, read PostgreSQL or Redis itself, or decide what a frame means.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from common import wire
from realtime import failpoints
from realtime.batch import Outcome
from realtime.domain import ReadOutcome, ReadRequest, Replier, SendOutcome, SendRequest
from realtime.fanout import Fanout
from realtime.metrics import TALLY
from realtime.notices import MessageNotices

#: The writer's ``submit``.
Submit = Callable[[SendRequest | ReadRequest, Replier], None]


class AfterCommit:
    def __init__(
        self,
        *,
        fanout: Fanout,
        notices: MessageNotices,
        commit_seconds: Callable[[], float],
    ) -> None:
        """``commit_seconds``: how long the batch being handed over took to commit (the
        writer's ``last_flush_s``)."""
        self.fanout, self.notices, self.commit_seconds = fanout, notices, commit_seconds
        #: Outcomes handed over while :meth:`submit` runs (None outside it).
        self._caught: list[Outcome] | None = None

    def submit(
        self, submit: Submit, request: SendRequest | ReadRequest, reply: Replier
    ) -> Outcome | None:
        """Call the writer's ``submit``; a refusal it hands over at once is returned."""
        caught: list[Outcome] = []
        self._caught = caught
        try:
            submit(request, reply)
        finally:
            self._caught = None
        return caught[0] if caught else None

    def on_outcomes(self, outcomes: list[Outcome]) -> None:
        """After a commit: fan out what was stored, then ack or refuse each request."""
        if self._caught is not None:
            self._caught.extend(outcomes)
            return
        tally = TALLY
        tally.batch_size.observe(len(outcomes))
        tally.commit.observe(self.commit_seconds())
        for outcome in outcomes:
            if isinstance(outcome, SendOutcome):
                if outcome.stored is not None:
                    self._fan_out_message(outcome)
                failpoints.hit("after_fanout_before_ack")
                outcome.reply.send_finished(outcome)
            else:
                outcome.reply.read_finished(outcome)
                if outcome.error is None:
                    self._fan_out_read(outcome)
                    request = outcome.request
                    self.notices.read(request.user, request.cid, outcome.seq)
        now = time.time()
        for outcome in outcomes:
            if isinstance(outcome, SendOutcome) and outcome.stored is not None:
                tally.send_ack.observe(now - outcome.request.received_at)

    def _fan_out_message(self, outcome: SendOutcome) -> None:
        # A resend is delivered again too: delivery is at-least-once and clients dedupe by
        # (cid, seq), and it repairs a fan-out lost to a crash between commit and publish.
        request, stored = outcome.request, outcome.stored
        assert stored is not None
        frame = wire.Msg(
            cid=request.cid,
            seq=stored.seq,
            id=stored.id,
            sender=request.sender,
            cmid=request.cmid,
            body=request.body,
            kind=request.kind,
            time=stored.time_ms,
        )
        users = (request.sender, *request.peers)
        scope = (request.cid, request.sender)
        watch = None
        if not stored.dup:  # a resend was counted the first time
            watch = self.notices.check(request.cid, stored.seq, request.sender, request.peers)
        self.fanout.deliver(
            users, wire.encode(frame), exclude=outcome.reply, scope=scope, watch=watch
        )

    def _fan_out_read(self, outcome: ReadOutcome) -> None:
        request = outcome.request
        frame = wire.ReadReceipt(cid=request.cid, user=request.user, seq=outcome.seq)
        self.fanout.deliver(request.peers, wire.encode(frame), scope=(request.cid, request.user))
