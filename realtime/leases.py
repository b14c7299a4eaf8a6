"""Which nodes hold a lease, as this node last read them: what decides whether a route is alive.

A route entry (:func:`common.rediskeys.route_key`, member = node id, score = when it was written)
carries no expiry: it is written on the user's first socket on a node and removed on their last
(or by the reaper of a dead node). It is alive as long as its node's lease is
(``mm:{nodes}:node:<id>``, kept for the node's TTL and renewed once per heartbeat:
:func:`common.cluster.renew_lease`), so a node's steady heartbeat costs O(1) Redis writes
whatever its number of users.

Reading every lease at every lookup would cost a round trip in another slot, so each node keeps
the set of leased nodes it read at its last heartbeat (O(nodes)) in a :class:`LiveNodes`, and the
readers (the broker's routes lookup, presence queries) filter route members through it. A node
missing from that set may have started after the read: its lease is written with its first
heartbeat, its routes as its users arrive. So a route on an unknown node counts as alive when it
was written after the read (less :data:`SKEW_S`, for the clocks of other machines and a node's
first routes, which may precede its first heartbeat by a moment); an older route on a node
without a lease is a dead node's, which its reaper removes within a heartbeat.

It must not write to Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Final

from redis.asyncio import Redis

from common.cluster import leased_nodes

#: How much older than the last read a route on an unknown node may be and still count.
SKEW_S: Final = 2.0


class LiveNodes:
    """This node's cached view of the leased nodes (refreshed by the broker's heartbeat)."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.ids: frozenset[str] = frozenset()
        #: When the set was read (epoch s, taken before the read was sent); 0: never.
        self.read_at = 0.0

    def update(self, ids: Iterable[str], read_at: float) -> None:
        self.ids, self.read_at = frozenset(ids), read_at

    async def refresh(self, redis: Redis) -> None:
        """Read the leased nodes again (raises the client's failures)."""
        read_at = time.time()
        self.update(await leased_nodes(redis), read_at)

    def age(self, now: float) -> float:
        return now - self.read_at

    def alive(self, node: str, written: float) -> bool:
        """Is a route of ``node`` written at ``written`` (epoch s) alive?"""
        return node == self.me or node in self.ids or written > self.read_at - SKEW_S

    def any_alive(self, members: Iterable[tuple[str, float]]) -> bool:
        return any(self.alive(node, written) for node, written in members)
