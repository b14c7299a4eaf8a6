"""What this node has learned from safety events: the fan-out gate and the admission check.

Owns the node-wide memory of recent events, kept by :mod:`realtime.safety` as it applies them:
closed conversations and blocked pairs (asked by the hub before every scoped write, so an item
already in flight is stopped too), token-version floors and bans (asked at authentication, so
one racing an event is refused), and the membership epoch (bumped by every event that changes
memberships, so a cache read across one is read again).

It must not do I/O: the node, the hub and the safety consumer share it as a plain object.
"""

from __future__ import annotations

import time
from typing import Any, Final

from common.codes import Close
from realtime.sockets import SocketView

#: Node-wide memory of recent events (FIFO beyond this): in-flight items are seconds old, and
#: PostgreSQL has the durable truth for everything older.
REMEMBER_MAX: Final = 100_000


def remember(table: dict[Any, Any], key: Any, value: Any = None) -> None:
    """Put ``key`` last in ``table``, dropping the oldest entry past :data:`REMEMBER_MAX`."""
    table.pop(key, None)
    table[key] = value
    if len(table) > REMEMBER_MAX:
        del table[next(iter(table))]


class SafetyState:
    """See the module docstring."""

    def __init__(self) -> None:
        self.closed: dict[int, None] = {}  # conversation ids closed by unmatch or block
        self.blocks: dict[tuple[int, int], None] = {}  # (blocker, blocked)
        self.token_floor: dict[int, int] = {}  # user -> lowest valid token version
        self.banned: dict[int, float] = {}  # user -> banned until (epoch s; inf: permanent)
        #: Bumped by each membership-changing event; a cache loaded across one reloads.
        self.membership_epoch = 0

    def admits(self, socket: SocketView, cid: int, author: int) -> bool:
        """May ``socket`` get a frame of conversation ``cid`` by ``author`` (0: none)?"""
        if cid and cid in self.closed:
            return False
        if author:
            user = socket.user_id
            if self.blocks and ((user, author) in self.blocks or (author, user) in self.blocks):
                return False
            m = socket.memberships
            if m is not None and author in m.blocked:
                return False
        return True

    def admission(self, user: int, token_version: int) -> Close | None:
        """A close code for an authentication that an event applied meanwhile revoked."""
        until = self.banned.get(user)
        if until is not None and until > time.time():
            return Close.ACCOUNT_DISABLED
        if token_version < self.token_floor.get(user, 0):
            return Close.REVOKED
        return None
