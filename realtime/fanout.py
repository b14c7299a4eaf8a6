"""One encoded frame to its recipients: local sockets now, other nodes' through the broker.

Owns the last step of every delivery: the hub writes the bytes to this node's sockets (each
checked by the safety gate just before the write when the frame is scoped to a conversation)
and the broker carries the same bytes to the nodes that host the other recipients. It also
takes what arrives from other nodes' deliveries (:meth:`Fanout.on_remote`), filtered the same
way, presence frames through presence (shown per recipient socket).

It must not await or decide what a frame says: callers encode it.
"""

from __future__ import annotations

from collections.abc import Sequence

from common import wire
from realtime.broker import Broker, Kind, Scope, Watch
from realtime.hub import Hub
from realtime.metrics import TALLY
from realtime.presence import Presence


class Fanout:
    def __init__(self, *, hub: Hub, broker: Broker, presence: Presence) -> None:
        self.hub, self.broker, self.presence = hub, broker, presence

    def deliver(
        self,
        users: Sequence[int],
        data: bytes,
        exclude: object = None,
        scope: tuple[int, int] | None = None,
        watch: Watch | None = None,
    ) -> None:
        """Local sockets now, other nodes through the broker (same bytes everywhere).

        ``scope`` is the frame's ``(cid, author)`` (read from ``data`` when not given): each
        recipient socket is checked against its block/membership cache just before the write.
        ``watch`` goes with the delivery to the broker (see :class:`realtime.broker.Watch`).
        """
        scope = scope or wire.scope_of(data)
        n = self.hub.deliver(users, data, exclude=exclude, scope=scope)
        TALLY.out_bytes(data, n)
        self.broker.publish(users, data, watch, scope=scope)

    def on_remote(self, users: Sequence[int], data: bytes, kind: Kind, scope: Scope) -> None:
        """An entry of this node's delivery stream (filtered here too: it may be in flight);
        its kind and scope travel in the entry, beside the bytes."""
        if kind == "presence":
            # Presence is shown per recipient socket (shared conversation, no block).
            self.presence.deliver_local(users, data, scope[1])
            return
        TALLY.out_bytes(data, self.hub.deliver(users, data, scope=scope))
