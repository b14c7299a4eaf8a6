"""Which nodes hold a lease, as this node last read them: what decides whether a route is alive.

A route entry (:func:`common.rediskeys.route_key`, member = node id, score = when it was written)
carries no expiry: it is written on the user's first socket on a node and removed on their last
(or by the reaper of a dead node). It is alive as long as its node's lease is
(``mm:{nodes}:node:<id>``, kept for the node's TTL and renewed once per heartbeat:
:func:`common.cluster.renew_lease`), so a node's steady heartbeat costs O(1) Redis writes
whatever its number of users.

Reading every lease at every lookup would cost a round trip in another slot, so each node keeps
what it read at its last heartbeat (O(nodes)) in a :class:`LiveNodes`: the leased nodes and when
each lease runs out unless renewed. The readers (the broker's routes lookup, presence queries)
filter route members through it:

- a node in the view is alive until its lease's end as read (a live node renews every TTL/3 and
  is read again before that end), so a killed node's users read offline within one TTL of its
  last renewal; when the view itself is stale (no heartbeat read it for ``stale_after_s``: this
  node's Redis calls failing or late) its nodes count as alive rather than all dropped;
- a node missing from the view may have started after the read: its lease is written with its
  first heartbeat, its routes as its users arrive. So a route on an unknown node counts as alive
  when it was written after the read (less :data:`SKEW_S`, for the clocks of other machines and a
  node's first routes, which may precede its first heartbeat by a moment); an older route on a
  node without a lease is a dead node's, which its reaper removes within a heartbeat.

It must not write to Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Final

from common.cluster import leased_nodes
from common.redisclient import RedisClient

#: How much older than the last read a route on an unknown node may be and still count.
SKEW_S: Final = 2.0


class LiveNodes:
    """This node's cached view of the leased nodes (refreshed by the broker's heartbeat)."""

    def __init__(self, me: str, *, stale_after_s: float) -> None:
        self.me, self.stale_after_s = me, stale_after_s
        #: Leased node -> when its lease runs out unless renewed (epoch s), as last read.
        self.ends: dict[str, float] = {}
        #: When the view was read (epoch s, taken before the read was sent); 0: never.
        self.read_at = 0.0

    def update(self, left_ms: dict[str, int], read_at: float) -> None:
        self.ends = {node: read_at + ms / 1000 for node, ms in left_ms.items()}
        self.read_at = read_at

    async def refresh(self, redis: RedisClient) -> None:
        """Read the leased nodes again (raises the client's failures)."""
        read_at = time.time()
        self.update(await leased_nodes(redis), read_at)

    def age(self, now: float) -> float:
        return now - self.read_at

    def alive(self, node: str, written: float, now: float) -> bool:
        """Is a route of ``node`` written at ``written`` (epoch s) alive at ``now``?"""
        if node == self.me:
            return True
        end = self.ends.get(node)
        if end is not None:
            return end > now or now - self.read_at > self.stale_after_s
        return written > self.read_at - SKEW_S

    def any_alive(self, members: Iterable[tuple[str, float]], now: float) -> bool:
        return any(self.alive(node, written, now) for node, written in members)
