"""A history-keeping chat workload and the checker that judges it after a fault (Jepsen style).

Each :class:`Peer` is one user's device behaving as docs/PROTOCOL.md asks of a client: it keeps
every send in an outbox until acked, resends with the same ``cmid`` after any doubt (ack
timeout, retryable error, reconnect), reconnects with jittered backoff to any live node, syncs
to the head after each ``ready`` and dedupes what it sees by ``(cid, seq)``. Every attempt is
recorded as ``ok`` (acked), ``fail`` (refused, with its code) or ``unknown`` (timeout or
disconnect). :func:`check` then compares the history with PostgreSQL: lost (acked, not stored),
duplicates, unexpected rows (stored, never attempted), acks that disagree with the row, gaps in
``seq``, and each member's deduped view against the conversation's rows.

It drives real sockets only and never touches a service process: faults are the tests' job.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from common.codes import RETRYABLE, is_terminal
from tests.support import TICK

ACK_TIMEOUT = 40 * TICK
CONNECT_TIMEOUT = 20 * TICK


@dataclass
class Op:
    """One logical send (one ``cmid``) and the outcome of each attempt."""

    sender: int
    cid: int
    cmid: str
    body: str
    outcomes: list[str] = field(default_factory=list)
    ack: dict[str, Any] | None = None
    failed: str | None = None  # a non-retryable refusal: the client gives up

    @property
    def settled(self) -> bool:
        return self.ack is not None or self.failed is not None


@dataclass
class History:
    ops: dict[tuple[int, str], Op] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)
    ack_times: list[float] = field(default_factory=list)
    closes: Counter[int] = field(default_factory=Counter)
    #: (received at, sender, cmid, cross-node?) of every live ``msg`` a peer received.
    deliveries: list[tuple[float, int, str, bool]] = field(default_factory=list)
    #: The node each user's peer is connected to now (from ``ready``).
    node_of: dict[int, str] = field(default_factory=dict)
    sent_at: dict[tuple[int, str], float] = field(default_factory=dict)

    def record(self, op: Op, outcome: str) -> None:
        """``ok``, ``unknown`` or ``fail:<code>``."""
        op.outcomes.append(outcome)
        self.attempts[outcome] += 1

    def longest_ack_gap(self, start: float, end: float) -> float:
        """Longest stretch in [start, end] with no ack at all: the outage as clients saw it."""
        times = sorted(t for t in self.ack_times if start <= t <= end)
        points = [start, *times, end]
        return max(b - a for a, b in itertools.pairwise(points))


class Peer:
    """One device of one user; see the module docstring for the client duties it performs."""

    def __init__(
        self,
        *,
        user: int,
        token: str,
        urls: Sequence[str],
        cids: Sequence[int],
        history: History,
        seed: int,
        interval: float = 2 * TICK,
        max_inflight: int = 8,
        burst: int = 1,
        ack_timeout: float = ACK_TIMEOUT,
    ) -> None:
        self.user, self.token, self.urls, self.cids = user, token, list(urls), list(cids)
        self.history, self.interval, self.max_inflight = history, interval, max_inflight
        self.ack_timeout, self.burst = ack_timeout, burst
        self.rng = random.Random(seed)
        self.sending = True
        self.outbox: dict[str, Op] = {}
        self.inflight: dict[str, float] = {}
        self.retry_at: dict[str, float] = {}
        self.view: dict[int, dict[int, tuple[int, str, str]]] = {c: {} for c in cids}
        self.conflicts: list[tuple[int, int]] = []
        self.connected = asyncio.Event()
        self.synced = asyncio.Event()
        self.want_sync = asyncio.Event()
        self.connections = 0
        self.terminal: int | None = None
        self._counter = 0
        self._url_index = seed % len(self.urls)
        self._pages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ws: ClientConnection | None = None

    # -- the view ------------------------------------------------------------------------------

    def held(self, cid: int) -> int:
        """The contiguous prefix held: sync from there, so a gap is always refilled."""
        seen, n = self.view[cid], 0
        while n + 1 in seen:
            n += 1
        return n

    def _see(self, cid: int, seq: int, sender: int, cmid: str, body: str) -> None:
        if cid not in self.view:
            return
        entry = (sender, cmid, body)
        old = self.view[cid].setdefault(seq, entry)
        if old != entry:
            self.conflicts.append((cid, seq))

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 2 * TICK
        while not stop.is_set() and self.terminal is None:
            url = self.urls[self._url_index % len(self.urls)]
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    ws = await connect(
                        url,
                        additional_headers={"Authorization": f"Bearer {self.token}"},
                        open_timeout=CONNECT_TIMEOUT,
                        close_timeout=2 * TICK,
                        max_size=2**20,
                    )
            except (OSError, InvalidHandshake, TimeoutError):
                self._url_index += 1
                await asyncio.sleep(backoff * (1 + self.rng.random()))
                backoff = min(backoff * 2, 20 * TICK)
                continue
            self._ws = ws
            try:
                await self._session(ws, stop)
                backoff = 2 * TICK
            except (ConnectionClosed, OSError, TimeoutError):
                pass
            finally:
                self._ws = None
                self.connected.clear()
                self.synced.clear()
                for cmid in list(self.inflight):
                    self.history.record(self.outbox[cmid], "unknown")
                self.inflight.clear()
                code = ws.close_code
                if code is not None:
                    self.history.closes[code] += 1
                    if is_terminal(code):
                        self.terminal = code
                await ws.close()
            # Another node next time: this one may be dead.
            self._url_index += 1
            await asyncio.sleep(backoff * (1 + self.rng.random()))

    async def _session(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        first = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT))
        if first.get("type") != "ready":
            raise ConnectionClosed(None, None)
        self.connections += 1
        self.history.node_of[self.user] = first["node"]
        self.connected.set()
        self._pages = asyncio.Queue()
        reader = asyncio.create_task(self._read(ws))
        try:
            await self._sync(ws, reader)
            # Everything unacked goes again with its cmid: its outcome is unknown until acked.
            for cmid in list(self.outbox):
                await self._send(ws, self.outbox[cmid])
            while not stop.is_set() and not reader.done():
                if self.want_sync.is_set():
                    self.want_sync.clear()
                    self.synced.clear()
                    await self._sync(ws, reader)
                now = time.monotonic()
                for cmid, sent in list(self.inflight.items()):
                    if now - sent > self.ack_timeout:
                        del self.inflight[cmid]
                        self.history.record(self.outbox[cmid], "unknown")
                        await self._send(ws, self.outbox[cmid])
                for cmid, at in list(self.retry_at.items()):
                    if now >= at and cmid in self.outbox and cmid not in self.inflight:
                        del self.retry_at[cmid]
                        await self._send(ws, self.outbox[cmid])
                for _ in range(self.burst):
                    if self.sending and len(self.outbox) < self.max_inflight:
                        await self._send(ws, self._new_op())
                await asyncio.wait({reader}, timeout=self.interval)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                await reader
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise ConnectionClosed(None, None)

    def _new_op(self) -> Op:
        self._counter += 1
        cid = self.rng.choice(self.cids)
        cmid = f"u{self.user}-{self._counter}"
        op = Op(self.user, cid, cmid, f"{cmid} says {self.rng.randrange(10**6)}")
        self.history.ops[(self.user, cmid)] = op
        self.outbox[cmid] = op
        return op

    async def _send(self, ws: ClientConnection, op: Op) -> None:
        frame = {"type": "send", "cid": op.cid, "cmid": op.cmid, "body": op.body, "rid": op.cmid}
        self.inflight[op.cmid] = time.monotonic()
        self.history.sent_at.setdefault((op.sender, op.cmid), time.monotonic())
        await ws.send(json.dumps(frame))

    async def _sync(self, ws: ClientConnection, reader: asyncio.Task[None]) -> None:
        for attempt in range(200):
            convs = {str(c): self.held(c) for c in self.cids}
            rid = f"sync{attempt}"
            await ws.send(json.dumps({"type": "sync", "convs": convs, "all": False, "rid": rid}))
            page = await self._page(rid, reader)
            if page["type"] == "error":
                await asyncio.sleep(4 * TICK)  # db_unavailable: try again
                continue
            if page["end"]:
                self.synced.set()
                return
        raise TimeoutError("sync never reached the end")

    async def _page(self, rid: str, reader: asyncio.Task[None]) -> dict[str, Any]:
        async with asyncio.timeout(self.ack_timeout):
            while True:
                getter = asyncio.ensure_future(self._pages.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    raise ConnectionClosed(None, None)
                page = getter.result()
                if page.get("rid") == rid:
                    return page

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            kind = frame["type"]
            if kind == "msg":
                self._see(frame["cid"], frame["seq"], frame["sender"], frame["cmid"], frame["body"])
                nodes = self.history.node_of
                cross = nodes.get(frame["sender"]) != nodes.get(self.user)
                self.history.deliveries.append(
                    (time.monotonic(), frame["sender"], frame["cmid"], cross)
                )
            elif kind == "ack":
                self._on_ack(frame)
            elif kind == "sync" or (kind == "error" and str(frame.get("rid")).startswith("sync")):
                if kind == "sync":
                    for m in frame["msgs"]:
                        self._see(m["cid"], m["seq"], m["sender"], m["cmid"], m["body"])
                self._pages.put_nowait(frame)
            elif kind == "error":
                self._on_error(frame)

    def _on_ack(self, frame: dict[str, Any]) -> None:
        op = self.history.ops.get((self.user, frame["cmid"]))
        if op is None:
            return
        self.inflight.pop(op.cmid, None)
        self.history.record(op, "ok")
        self.history.ack_times.append(time.monotonic())
        if op.ack is None:
            op.ack = frame
        elif (op.ack["id"], op.ack["seq"]) != (frame["id"], frame["seq"]):
            op.failed = f"two acks disagree: {op.ack} vs {frame}"
        self.outbox.pop(op.cmid, None)
        self.retry_at.pop(op.cmid, None)
        self._see(op.cid, frame["seq"], op.sender, op.cmid, op.body)

    def _on_error(self, frame: dict[str, Any]) -> None:
        op = self.history.ops.get((self.user, str(frame.get("rid"))))
        if op is None or op.settled:
            return
        self.inflight.pop(op.cmid, None)
        self.history.record(op, f"fail:{frame['code']}")
        if frame["code"] in RETRYABLE:
            self.retry_at[op.cmid] = time.monotonic() + 4 * TICK
        else:
            op.failed = frame["code"]
            self.outbox.pop(op.cmid, None)


class Workload:
    """Many peers on a set of conversations, started and settled together."""

    def __init__(self, peers: list[Peer], history: History) -> None:
        self.peers, self.history = peers, history
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.started = time.monotonic()

    def start(self) -> None:
        self.started = time.monotonic()
        self.tasks = [asyncio.create_task(p.run(self.stop)) for p in self.peers]

    async def wait_connected(self, timeout: float = 200 * TICK) -> None:
        async with asyncio.timeout(timeout):
            for p in self.peers:
                await p.connected.wait()

    async def acks_since(self, mark: float, count: int, timeout: float = 400 * TICK) -> float:
        """Wait until ``count`` acks arrived after ``mark``; return when the first one did."""
        async with asyncio.timeout(timeout):
            while sum(t > mark for t in self.history.ack_times) < count:
                await asyncio.sleep(TICK)
        return min(t for t in self.history.ack_times if t > mark)

    async def settle(self, timeout: float = 600 * TICK) -> None:
        """Stop new sends, let every outbox drain, then sync every peer to the head."""
        for p in self.peers:
            p.sending = False
        try:
            async with asyncio.timeout(timeout):
                while any(p.outbox for p in self.peers if p.terminal is None):
                    await asyncio.sleep(TICK)
                for p in self.peers:
                    await p.connected.wait()
                    p.want_sync.set()
                for p in self.peers:
                    while p.want_sync.is_set() or not p.synced.is_set():
                        await asyncio.sleep(TICK)
        except TimeoutError:
            stuck = {
                p.user: {
                    "outbox": [(op.cmid, op.outcomes[-3:]) for op in list(p.outbox.values())[:3]],
                    "connected": p.connected.is_set(),
                    "synced": p.synced.is_set(),
                    "terminal": p.terminal,
                }
                for p in self.peers
                if p.outbox or not p.synced.is_set()
            }
            raise AssertionError(f"the system did not recover in {timeout}s: {stuck}") from None

    async def close(self) -> None:
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 100 * TICK)


@dataclass
class Verdict:
    attempted: int
    acked: int
    stored: int
    lost: list[tuple[int, str]]
    duplicates: list[tuple[int, str]]
    unexpected: list[tuple[int, str]]
    wrong_acks: list[tuple[int, str]]
    gaps: dict[int, list[int]]
    bad_views: list[tuple[int, int]]
    conflicts: list[tuple[int, int]]
    refusals: list[tuple[int, str, str]]
    attempts: dict[str, int]

    @property
    def problems(self) -> dict[str, object]:
        names = ("lost", "duplicates", "unexpected", "wrong_acks", "gaps", "bad_views")
        found: dict[str, object] = {n: getattr(self, n) for n in names if getattr(self, n)}
        if self.conflicts:
            found["conflicts"] = self.conflicts
        if self.refusals:
            found["non-retryable refusals"] = self.refusals
        return found

    def summary(self) -> str:
        fails = {k: v for k, v in self.attempts.items() if k.startswith("fail:")}
        return (
            f"ops={self.attempted} acked={self.acked} stored={self.stored} attempts: "
            f"ok={self.attempts.get('ok', 0)} unknown={self.attempts.get('unknown', 0)} "
            f"refused={sum(fails.values())} {fails or ''}"
        )


async def check(db: asyncpg.Pool[asyncpg.Record], history: History, peers: list[Peer]) -> Verdict:
    """Compare the history and every peer's view with PostgreSQL (see the module docstring)."""
    cids = sorted({c for p in peers for c in p.cids})
    rows = await db.fetch(
        "SELECT conversation_id, seq, id, sender_id, cmid, body FROM messages "
        "WHERE conversation_id = ANY($1::bigint[]) ORDER BY conversation_id, seq",
        cids,
    )
    keys = Counter((r["sender_id"], r["cmid"]) for r in rows)
    by_key = {(r["sender_id"], r["cmid"]): r for r in rows}
    attempted = set(history.ops)
    acked = {k for k, op in history.ops.items() if op.ack is not None}
    lost = sorted(acked - set(keys))
    wrong = [
        k
        for k in sorted(acked & set(keys))
        if (by_key[k]["id"], by_key[k]["seq"])
        != ((history.ops[k].ack or {}).get("id"), (history.ops[k].ack or {}).get("seq"))
    ]
    gaps: dict[int, list[int]] = {}
    expected: dict[int, dict[int, tuple[int, str, str]]] = {c: {} for c in cids}
    for r in rows:
        expected[r["conversation_id"]][r["seq"]] = (r["sender_id"], r["cmid"], r["body"])
    for cid in cids:
        seqs = sorted(expected[cid])
        if seqs != list(range(1, len(seqs) + 1)):
            gaps[cid] = seqs
    bad_views = [(p.user, cid) for p in peers for cid in p.cids if p.view[cid] != expected[cid]]
    return Verdict(
        attempted=len(attempted),
        acked=len(acked),
        stored=len(rows),
        lost=lost,
        duplicates=sorted(k for k, n in keys.items() if n > 1),
        unexpected=sorted(set(keys) - attempted),
        wrong_acks=wrong,
        gaps=gaps,
        bad_views=bad_views,
        conflicts=[c for p in peers for c in p.conflicts],
        refusals=[(op.sender, op.cmid, op.failed) for op in history.ops.values() if op.failed],
        attempts=dict(history.attempts),
    )
