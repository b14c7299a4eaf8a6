"""The socket-state seam: what the node's parts may ask of, and tell, one local socket.

Owns the :class:`LocalSocket` protocol. Safety events change what a socket may reach (a
conversation closed or opened, a peer blocked, a token revoked); they reach the socket's state
only through these inputs, which the connection hands to its sans-I/O
:class:`~realtime.protocol.Protocol`. Nothing outside a connection edits its membership cache or
knows its concrete type, so the rules can be tested on a bare protocol and a test double can
stand behind the seam.

It must not import the connection, the transport or any service.
"""

from __future__ import annotations

from typing import Protocol

from realtime.domain import Memberships


class SocketView(Protocol):
    """What the fan-out gate and presence read of a socket before writing to it."""

    @property
    def user_id(self) -> int: ...

    @property
    def memberships(self) -> Memberships | None:
        """The socket's membership cache (None until loaded, or while PostgreSQL is down)."""


class LocalSocket(SocketView, Protocol):
    """An authenticated socket of this node, as the hub, presence and safety events see it."""

    def write(self, data: bytes) -> None:
        """Queue one encoded text frame without awaiting."""

    def close(self, code: int, reason: str) -> None: ...

    def conversation_closed(self, cid: int) -> None:
        """An unmatch (or block) ended ``cid``: it leaves the cache."""

    def peer_blocked(self, peer: int) -> tuple[int, ...]:
        """``peer`` and this user are blocked (either way): the conversations with ``peer``
        leave the cache; returns their ids."""

    def conversation_opened(self, cid: int, peer: int) -> None:
        """A match opened ``cid`` with ``peer`` (ignored while ``peer`` is blocked)."""

    def token_revoked(self, code: int, reason: str, *, below: int | None = None) -> None:
        """Close with ``code`` unless ``below`` is given and the socket's token version is at
        least ``below`` (a ban passes None: every socket closes)."""

    def memberships_reloaded(self, memberships: Memberships) -> None:
        """Replace the cache with a fresh copy read from PostgreSQL."""


def memberships_of(socket: SocketView) -> Memberships | None:
    """A local socket's membership cache: what presence checks before writing to it."""
    return socket.memberships
