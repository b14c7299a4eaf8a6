"""The node's local sockets, by user: who is connected here and how to reach them.

Owns the ``user -> sockets`` index and local delivery: one encoded frame written to every socket
of the given users without awaiting any of them (a socket past its high-water mark closes
itself as a slow consumer inside :meth:`Socket.write`, so one slow client never stalls the
others). It must not touch Redis or PostgreSQL: remote nodes are the broker's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeAlias

from realtime.sockets import LocalSocket

#: What the hub holds: a local socket as the node's parts see it (``realtime/sockets.py``).
Socket: TypeAlias = LocalSocket
#: May ``socket`` see a frame of conversation ``cid`` by ``author``?
Gate: TypeAlias = Callable[[Socket, int, int], bool]


class Hub:
    def __init__(self, *, max_per_user: int, gate: Gate) -> None:
        self.max_per_user = max_per_user
        self._by_user: dict[int, set[Socket]] = {}
        #: Asked per recipient socket for scoped deliveries (the safety events' block/unmatch
        #: filter at fan-out, :meth:`realtime.safetystate.SafetyState.admits`, so items already
        #: in flight are stopped too).
        self.gate = gate

    def add(self, socket: Socket) -> bool | None:
        """Index ``socket``: True if it is the user's first here, None if over the per-user cap."""
        sockets = self._by_user.setdefault(socket.user_id, set())
        if len(sockets) >= self.max_per_user:
            return None
        sockets.add(socket)
        return len(sockets) == 1

    def remove(self, socket: Socket) -> bool:
        """Forget ``socket``; True if that was the user's last one here."""
        sockets = self._by_user.get(socket.user_id)
        if sockets is None or socket not in sockets:
            return False
        sockets.discard(socket)
        if sockets:
            return False
        del self._by_user[socket.user_id]
        return True

    def deliver(
        self,
        users: Iterable[int],
        data: bytes,
        exclude: object = None,
        scope: tuple[int, int] | None = None,
    ) -> int:
        """Write ``data`` to every local socket of ``users`` but ``exclude``; return how many.

        ``scope`` is the frame's ``(cid, author)`` (0 when it has none): each recipient socket
        is then checked by :attr:`gate` just before the write.
        """
        gate = self.gate if scope is not None else None
        cid, author = scope or (0, 0)
        count = 0
        for user in users:
            for socket in tuple(self._by_user.get(user, ())):
                if socket is not exclude and (gate is None or gate(socket, cid, author)):
                    socket.write(data)
                    count += 1
        return count

    def sockets_of(self, user: int) -> frozenset[Socket]:
        return frozenset(self._by_user.get(user, ()))

    def users(self) -> Iterator[int]:
        return iter(tuple(self._by_user))

    def has(self, user: int) -> bool:
        return user in self._by_user

    @property
    def user_count(self) -> int:
        return len(self._by_user)

    @property
    def socket_count(self) -> int:
        return sum(len(s) for s in self._by_user.values())
