"""Presence: who is online across nodes and devices, who may see it, and the pushes it makes.

Owns the grace and crash rules over the presence state (keys named in :mod:`common.rediskeys`,
``<u>`` the user's hash tag):

- **online** = the user's route set (``mm:{<u>}:user:<id>:routes``, kept by the broker, no
  expiry) has an entry on a node that holds its lease (:mod:`realtime.leases`: one key per node,
  renewed by its heartbeat, so no per-user refresh), or the user is inside the grace after their
  last socket closed (``mm:{<u>}:user:<id>:grace``, a short-lived marker);
- ``mm:{<u>}:user:<id>:shown`` says peers were told "online" (set NX on the first socket anywhere:
  whoever sets it announces online; deleted by whoever announces offline, in one Lua script
  that first checks that no route is left), so an online or offline push happens once per
  change whatever the number of nodes and devices; it has no expiry either;
- ``mm:{<u>}:user:<id>:seen`` is the last-seen time, rounded down to the minute (privacy);
- ``mm:{node:<id>}:users`` lists the users a node hosts (or holds in grace), so when that node
  dies (its heartbeat in ``mm:{nodes}`` lapses for ``presence_ttl_s``) one surviving node claims
  it (``ZREM`` returns 1 to exactly one; a node whose heartbeat key, kept for that node's own
  TTL, still exists is alive), removes its routes, deletes its delivery stream and announces
  its users offline: within one TTL and one reaper step of the kill.
- a node that was cut off from Redis longer than its TTL may have been reaped meanwhile: its
  broker finds the lease gone, writes its routes again and counts it
  (:attr:`~realtime.broker.Broker.regained`); this module then lists its users again, shows
  them online again (``shown`` set NX) and announces those it showed.

Who sees what is decided per recipient socket, at the moment of writing, from that socket's
membership cache (:func:`visible`): a shared open conversation and no block either way. Pushes
are ``presence`` frames sent through the node's delivery path (local sockets and the delivery
streams), never persisted.

The shared state sits behind :class:`~realtime.presencebackend.PresenceBackend` (Redis, or the
in-memory twin); this module decides who is told what and when.

Exceptions: the backend's :class:`PresenceUnavailable` is caught here and logged (``presence
failed``); queries raise it. It must not touch sockets except through the hub, nor PostgreSQL
except through the store's membership read (for a dead node's users).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from common import wire
from common.tasks import cancel_and_wait
from realtime.broker import Broker
from realtime.domain import Memberships
from realtime.hub import Hub, Socket
from realtime.metrics import TALLY
from realtime.presencebackend import PresenceBackend, PresenceUnavailable
from realtime.store import Store, StoreUnavailable

log = logging.getLogger("realtime.presence")


def visible(memberships: Memberships | None, subject: int) -> bool:
    """May the owner of ``memberships`` see ``subject``'s presence? (Shared open conversation,
    no block either way; the block set is symmetric, see ``store.ACCOUNT_SQL``.)"""
    if memberships is None or subject in memberships.blocked:
        return False
    return any(subject in peers for peers in memberships.peers.values())


def audience(memberships: Memberships | None) -> tuple[int, ...]:
    """Everyone ``memberships`` lets see its owner: the peers of open conversations, unblocked."""
    if memberships is None:
        return ()
    users = {u for peers in memberships.peers.values() for u in peers}
    return tuple(sorted(users - memberships.blocked))


def frame(user: int, state: wire.PresenceStatus, last_seen: int = 0) -> bytes:
    return wire.encode(wire.Presence(users=[wire.PresenceState(user, state, last_seen)]))


@dataclass(slots=True)
class _Pending:
    due: float
    peers: tuple[int, ...]


class Presence:
    """One node's presence service (see the module docstring)."""

    def __init__(
        self,
        backend: PresenceBackend,
        *,
        hub: Hub,
        broker: Broker,
        store: Store,
        view: Callable[[Socket], Memberships | None],
        ttl_s: float,
        grace_s: float,
    ) -> None:
        self.backend, self.hub, self.broker = backend, hub, broker
        self.store, self.view = store, view
        self.ttl_s, self.grace_s = ttl_s, grace_s
        self.step_s = max(0.05, min(grace_s / 4, ttl_s / 6))
        self._pending: dict[int, _Pending] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._regained = broker.regained

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="presence")

    async def close(self, *, timeout_s: float) -> None:
        """Settle every pending grace (bounded), then stop the loop and forget this node."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._pending and loop.time() < deadline:
            self._wake.set()
            await asyncio.sleep(self.step_s)
        await cancel_and_wait(self._task)
        self._task = None
        with contextlib.suppress(PresenceUnavailable):
            await self.backend.forget()

    # -- local sockets come and go ----------------------------------------------------------

    async def joined(self, user: int, memberships: Memberships | None) -> None:
        """The user's first socket on this node (its route is already written)."""
        self._pending.pop(user, None)
        try:
            first = await self.backend.joined(user)
        except PresenceUnavailable as exc:
            log.warning("presence failed", extra={"error": str(exc), "user": user})
            return
        if first:
            self.announce(user, "online", 0, audience(memberships))

    async def left(self, user: int, memberships: Memberships | None) -> None:
        """The user's last socket on this node is closing: offline after the grace, if still so.

        Called before the route is withdrawn: the grace marker keeps queries answering
        "online" while a reconnect may come.
        """
        self._pending[user] = _Pending(time.time() + self.grace_s, audience(memberships))
        self._wake.set()
        try:
            await self.backend.hold_grace(user, self.grace_s + max(1.0, 4 * self.step_s))
        except PresenceUnavailable as exc:
            log.warning("presence failed", extra={"error": str(exc), "user": user})

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- pushes ------------------------------------------------------------------------------

    def announce(
        self, user: int, state: wire.PresenceStatus, last_seen: int, peers: Sequence[int]
    ) -> None:
        TALLY.presence[state] += 1
        if not peers:
            return
        data = frame(user, state, last_seen)
        self.deliver_local(peers, data, user)
        self.broker.publish(peers, data, kind="presence", scope=(0, user))

    def deliver_local(self, users: Iterable[int], data: bytes, subject: int) -> int:
        """Write a presence frame about ``subject`` to the local sockets of ``users`` that may
        see it (the subject travels beside the bytes: the frame is not decoded)."""
        count = 0
        for user in users:
            for sock in self.hub.sockets_of(user):
                if visible(self.view(sock), subject):
                    sock.write(data)
                    count += 1
        TALLY.out_bytes(data, count)
        return count

    # -- queries -----------------------------------------------------------------------------

    async def states(self, users: Sequence[int]) -> dict[int, wire.PresenceState]:
        """Online/offline and last seen of ``users`` (the caller decided they are visible).

        Raises :class:`PresenceUnavailable` when the backend cannot say.
        """
        if not users:
            return {}
        try:
            states = await self.backend.states(users, time.time())
        except PresenceUnavailable as exc:
            log.warning("presence failed", extra={"error": str(exc)})
            raise
        return {
            user: wire.PresenceState(user, "online")
            if online
            else wire.PresenceState(user, "offline", seen)
            for user, (online, seen) in zip(users, states, strict=True)
        }

    async def answer(
        self, memberships: Memberships | None, users: Sequence[int], rid: str | None
    ) -> bytes:
        """The encoded answer to a ``presence`` query; unknown for anyone this user may not see.

        Raises :class:`PresenceUnavailable` when the backend cannot say.
        """
        asked = list(dict.fromkeys(users))
        shown = [u for u in asked if visible(memberships, u)]
        states = await self.states(shown)
        entries = [states.get(u) or wire.PresenceState(u, "unknown") for u in asked]
        return wire.encode(wire.Presence(users=entries, rid=rid))

    # -- the loop: graces that ran out, a regained lease, dead nodes ---------------------------

    async def _loop(self) -> None:
        reap_every, last_reap = self.ttl_s / 3, 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.step_s)
            self._wake.clear()
            try:
                await self._settle_due(time.time())
                if self.broker.regained != self._regained and self.broker.leased:
                    await self._rejoin(self.broker.regained)
                now = time.monotonic()
                if now - last_reap >= reap_every:
                    last_reap = now
                    await self._reap()
            except PresenceUnavailable as exc:
                log.warning("presence failed", extra={"error": str(exc)})
            except Exception:
                log.exception("presence loop step failed")

    async def _settle_due(self, now: float) -> None:
        due = [u for u, p in self._pending.items() if p.due <= now and not self.hub.has(u)]
        for user in [u for u, p in self._pending.items() if self.hub.has(u)]:
            del self._pending[user]  # back on this node: nothing to settle
        if not due:
            return
        results = await self.backend.settle(due, now)
        for user, last_seen in results.items():
            entry = self._pending.pop(user, None)
            if last_seen >= 0 and entry is not None:
                self.announce(user, "offline", last_seen, entry.peers)
        gone = [u for u in due if not self.hub.has(u) and u not in self._pending]
        if gone:
            await self.backend.release(gone)

    async def _rejoin(self, regained: int) -> None:
        """The broker wrote this node's routes again after its lease lapsed: list the users
        held here again, and announce online those no longer shown (a reaper may have
        announced them offline meanwhile). O(users), once per lease regained; a failed one is
        tried again once the broker holds its lease again (its routes first, then this)."""
        hosted = list(self.hub.users())
        held = {*hosted, *self._pending}
        shown = await self.backend.rejoin(held, hosted) if held else []
        self._regained = regained  # only once it worked: else the next step tries again
        for user in shown:
            sockets = self.hub.sockets_of(user)
            memberships = self.view(next(iter(sockets))) if sockets else None
            self.announce(user, "online", 0, audience(memberships))
        if shown:
            log.warning("presence restored after a lost lease", extra={"users": len(shown)})

    async def _reap(self) -> None:
        """Claim nodes whose heartbeat lapsed; clean their routes and announce their users."""
        now = time.time()
        for node in await self.backend.claim_dead_nodes(now):
            users = await self.backend.reap(node)
            log.warning("dead node reaped", extra={"dead_node": node, "users": len(users)})
            if users:
                await self._announce_reaped(users, now)

    async def _announce_reaped(self, users: list[int], now: float) -> None:
        for user, last_seen in (await self.backend.settle(users, now)).items():
            if last_seen < 0:
                continue
            try:
                memberships = await self.store.memberships(user)
            except StoreUnavailable:
                memberships = None  # nobody is told; queries still answer "offline"
            self.announce(user, "offline", last_seen, audience(memberships))
