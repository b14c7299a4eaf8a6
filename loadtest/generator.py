"""The peak load generator: ``python -m loadtest.generator {peak,rate,idle} ...`` (uvloop).

Owns driving chat servers hard from one process and measuring them. ``peak``: N conversation
pairs (made in PostgreSQL, tokens from the target's development key set), both members send,
each client keeps at most ``--window`` sends awaiting their ack; the run stops at ``--duration``
seconds or ``--messages`` sends, whichever comes first. ``rate``: the same at a fixed offered
rate (latency measured from each message's scheduled time, so a stalled server cannot hide its
queueing: no coordinated omission). ``idle``: opens and holds N authenticated connections and
reports the node's RSS per connection. Chat runs end with the correctness check of
:func:`loadtest.report.check_run` (acked ⊆ stored, no duplicates, gapless seq, every recipient
got every acked message).

Clients are spread over one or more node URLs (``--spread cross`` puts the two members of a
pair on different nodes), may bind to several loopback source addresses (127.0.0.2, ...) to pass
the ~28k ephemeral ports of one address, and the process raises its own open-file limit. Only
loopback targets are accepted; every loop is bounded in count and time. It never starts or stops
a server (``loadtest/bench.py`` does) and speaks each protocol through :mod:`loadtest.adapters`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import http.client
import ipaddress
import itertools
import json
import math
import resource
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import uvloop
from prometheus_client.parser import text_string_to_metric_families

from common.settings import Settings, get_settings
from loadtest import population
from loadtest.adapters import ACK, ERROR, MSG, READY, Adapter, make_adapter
from loadtest.report import ChatReport, IdleReport, Latency, check_run
from loadtest.wsclient import HandshakeError, WsClient

#: Handshakes in flight at once: each costs the node a token check and two or three queries,
#: so more only queues on its database pool (and times out as close 4005).
CONNECT_CONCURRENCY: Final = 64
PER_SOURCE: Final = 20_000  # below the 28,232 ephemeral ports of one source address
MAX_SOURCES: Final = 50
DRAIN_S: Final = 10.0
MAX_DRAIN_S: Final = 60.0
TICK_S: Final = 0.001


def check_loopback(url: str) -> str:
    host = urlsplit(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing a non-loopback target: {url}")
    return url


def with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    if parts.path not in ("", "/"):
        return url
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def source_address(index: int, sources: int) -> str | None:
    """127.0.0.(2 + k) for the k-th block of PER_SOURCE connections; None with one source."""
    if sources <= 1:
        return None
    return f"127.0.0.{2 + min(index // PER_SOURCE, sources - 1)}"


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE toward ``wanted`` (the hard limit too when allowed); the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted > hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    target = min(max(soft, wanted), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# -- one chat run ---------------------------------------------------------------------------


@dataclass
class Run:
    """Shared history of a chat run: what was sent, acked, delivered and refused."""

    adapter: Adapter
    window: int
    remaining: int
    body: str
    warmup_until: float = math.inf
    sending: bool = False
    sent_at: dict[str, float] = field(default_factory=dict)
    acked: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    delivered: set[tuple[int, str]] = field(default_factory=set)
    ack_lat: list[float] = field(default_factory=list)
    deliv_lat: list[float] = field(default_factory=list)
    #: Rate mode: how late the generator itself released each send (see ChatClient.refill).
    release_lag: list[float] = field(default_factory=list)
    delivered_count: int = 0
    measured_delivered: int = 0
    measured_acked: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)
    inflight: int = 0


class ChatClient:
    """One member of a pair on one socket: sends to its partner, records acks and deliveries."""

    def __init__(self, run: Run, *, user: int, peer: int, cid: int, index: int, tag: str) -> None:
        self.run, self.user, self.peer, self.cid = run, user, peer, cid
        self.prefix = f"{tag}.{index}."
        self.counter = itertools.count()
        self.inflight = 0
        self.backlog: list[float] = []  # scheduled send times (rate mode)
        self.rate_mode = False
        self.ws: WsClient | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._refill_soon = False
        self.closed_by_us = False

    async def connect(self, url: str, token: str, source: str | None) -> None:
        self.ws = await WsClient.connect(
            url, token=token, on_text=self.on_text, on_close=self.on_close, source=source
        )
        if not self.run.adapter.has_ready:
            self.ready.set_result(None)

    def on_close(self, code: int) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed:{code}"))
        if not self.closed_by_us:
            self.run.closes[str(code)] += 1

    def close(self) -> None:
        self.closed_by_us = True
        if self.ws is not None:
            self.ws.close()

    def on_text(self, data: bytes) -> None:
        kind, cmid, code, seq = self.run.adapter.classify(data)
        run = self.run
        now = time.perf_counter()
        if kind == ACK:
            sent = run.sent_at.get(cmid)
            if sent is None or cmid in run.acked:
                return  # a duplicate ack: nothing new
            run.acked[cmid] = (self.user, self.peer, seq)
            self.inflight -= 1
            run.inflight -= 1
            if sent >= run.warmup_until:
                run.ack_lat.append(now - sent)
            if run.sending and now >= run.warmup_until:
                run.measured_acked += 1
            self.schedule_refill()
        elif kind == MSG:
            key = (self.user, cmid)
            if key in run.delivered:
                return
            run.delivered.add(key)
            run.delivered_count += 1
            sent = run.sent_at.get(cmid)
            if sent is not None and sent >= run.warmup_until:
                run.deliv_lat.append(now - sent)
            # Throughput counts what arrives inside the measured window, whenever it was sent.
            if run.sending and now >= run.warmup_until:
                run.measured_delivered += 1
        elif kind == ERROR:
            run.errors[code] += 1
            if cmid and cmid in run.sent_at and cmid not in run.acked:
                self.inflight -= 1
                run.inflight -= 1
                self.schedule_refill()
        elif kind == READY and not self.ready.done():
            self.ready.set_result(None)

    def schedule_refill(self) -> None:
        # One refill per batch of frames: the refill writes all new sends in one syscall.
        if not self._refill_soon and self.run.sending:
            self._refill_soon = True
            asyncio.get_running_loop().call_soon(self.refill)

    def refill(self) -> None:
        self._refill_soon = False
        run, ws = self.run, self.ws
        if not run.sending or ws is None or not ws.open:
            return
        room = run.window - self.inflight
        if self.rate_mode:
            room = min(room, len(self.backlog))
        room = min(room, run.remaining)
        if room <= 0:
            return
        encode, cid, prefix, body = run.adapter.encode_send, self.cid, self.prefix, run.body
        frames = []
        now = time.perf_counter()
        for i in range(room):
            cmid = f"{prefix}{next(self.counter)}"
            run.sent_at[cmid] = self.backlog[i] if self.rate_mode else now
            frames.append(encode(cid, cmid, body))
        if self.rate_mode:
            if room == len(self.backlog):
                # Nothing due is held back by the window (the server's pace), so each send's
                # lateness is the generator's own: its tick and its loop. Charged to the
                # server in the latency figures all the same; reported to tell them apart.
                run.release_lag.extend(now - due for due in self.backlog if due >= run.warmup_until)
            del self.backlog[:room]
        self.inflight += room
        run.inflight += room
        run.remaining -= room
        ws.send_many(frames)


async def connect_all(
    clients: list[tuple[ChatClient, str, str]],
    sources: int,
    timeout_s: float,
    concurrency: int = CONNECT_CONCURRENCY,
) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, client: ChatClient, url: str, token: str) -> None:
        async with gate:
            await connect_one(client, url, token, source_address(index, sources), timeout_s)

    await asyncio.gather(*(one(i, c, u, t) for i, (c, u, t) in enumerate(clients)))


async def connect_one(
    client: ChatClient, url: str, token: str, source: str | None, timeout_s: float
) -> bool:
    """Connect ``client`` and wait until it is ready; a failure is counted in its run's errors."""
    try:
        await client.connect(url, token, source)
        await asyncio.wait_for(asyncio.shield(client.ready), timeout_s)
    except ConnectionError as exc:  # closed before ready: name the close code
        client.run.errors[f"connect:{exc}"] += 1
    except (OSError, TimeoutError, HandshakeError) as exc:
        client.run.errors[f"connect:{type(exc).__name__}"] += 1
    else:
        return True
    if client.ready.done() and not client.ready.cancelled():
        client.ready.exception()  # counted above: not "never retrieved"
    return False


@dataclass
class Session:
    """A chat run's connected pairs and shared history, from :func:`open_pairs` to
    :func:`finish` (a soak sends through the same session for as long as it runs)."""

    target: str
    urls: list[str]
    pairs: list[population.Pair]
    run: Run
    live: list[ChatClient]
    window: int


@dataclass(frozen=True, slots=True)
class Window:
    """When a session sent: its start, when sending stopped, and the measured seconds."""

    start: float
    send_end: float
    measured_s: float


async def open_pairs(
    *,
    target: str,
    urls: Sequence[str],
    pairs: int,
    window: int,
    messages: int,
    body_chars: int = 32,
    spread: str = "same",
    sources: int = 1,
    settings: Settings | None = None,
) -> Session:
    """Make ``pairs`` conversations, connect both members of each, keep the pairs that are."""
    settings = settings or get_settings()
    adapter = make_adapter(target)
    urls = [with_path(check_loopback(u), adapter.path) for u in urls]
    raise_nofile(4 * pairs + 1024)
    made = await population.create_pairs(settings.asyncpg_dsn, pairs)
    tokens = population.mint_tokens(settings, [u for p in made for u in (p.a, p.b)])
    run = Run(adapter=adapter, window=window, remaining=messages, body="x" * body_chars)
    tag = secrets.token_hex(3)
    clients: list[tuple[ChatClient, str, str]] = []
    for i, p in enumerate(made):
        url_a = urls[i % len(urls)]
        url_b = urls[(i + 1) % len(urls)] if spread == "cross" else url_a
        a = ChatClient(run, user=p.a, peer=p.b, cid=p.cid, index=2 * i, tag=tag)
        b = ChatClient(run, user=p.b, peer=p.a, cid=p.cid, index=2 * i + 1, tag=tag)
        clients += [(a, url_a, tokens[p.a]), (b, url_b, tokens[p.b])]
    await connect_all(clients, sources, timeout_s=30.0)
    ok = {id(c) for c, _, _ in clients if c.ready.done() and not c.ready.exception()}
    # Only pairs whose two members are both connected send: a message to an absent member
    # could not be delivered, and the check would blame the server for it.
    live = [
        c
        for a, b in zip(clients[::2], clients[1::2], strict=True)
        if id(a[0]) in ok and id(b[0]) in ok
        for c in (a[0], b[0])
    ]
    return Session(target, urls, made, run, live, window)


async def send(
    session: Session,
    *,
    duration_s: float,
    rate: float | None = None,
    warmup_s: float = 1.0,
    drain_s: float = DRAIN_S,
    on_window: Callable[[str], None] | None = None,
) -> Window:
    """Send for ``duration_s`` (as fast as the window allows, or at ``rate``/s), then drain.

    ``on_window`` is called with ``"start"`` just before the first send and ``"end"`` when
    sending stops (the bench reads every process's CPU time there).
    """
    run, live = session.run, session.live
    with _no_collector_pauses():
        if on_window is not None:
            on_window("start")
        start = time.perf_counter()
        run.warmup_until = start + (warmup_s if duration_s > 2 * warmup_s else 0.0)
        deadline = start + duration_s
        run.sending = True
        if rate is None:
            for c in live:
                c.refill()
            while time.perf_counter() < deadline and (run.remaining > 0 or run.inflight > 0):
                await asyncio.sleep(0.05)
                if run.remaining <= 0:
                    break
        else:
            await _offer(run, live, rate, start, deadline)
        send_end = time.perf_counter()
        if on_window is not None:
            on_window("end")
        run.sending = False
        measured_s = max(send_end - run.warmup_until, 1e-9)
        # Let outstanding acks and deliveries arrive, then read what was stored. A slow server
        # gets longer (its in-flight sends at its own pace, x2), never more than MAX_DRAIN_S.
        pace = max(run.measured_acked / measured_s, 1.0)
        drain_deadline = time.perf_counter() + min(
            max(drain_s, 2 * run.inflight / pace), MAX_DRAIN_S
        )
        while time.perf_counter() < drain_deadline:
            if run.inflight <= 0 and not _undelivered(run):
                break
            await asyncio.sleep(0.1)
    return Window(start, send_end, measured_s)


async def finish(
    session: Session, sent: Window, *, rate: float | None, settings: Settings | None = None
) -> ChatReport:
    """Close the session's sockets, run the end-of-run check against PostgreSQL, report."""
    settings = settings or get_settings()
    run = session.run
    for c in session.live:
        c.close()
    cids = [p.cid for p in session.pairs]
    stored = await population.stored_messages(settings.asyncpg_dsn, cids)
    check = check_run(acked=run.acked, delivered=run.delivered, stored=stored)
    return ChatReport(
        target=session.target,
        mode="peak" if rate is None else "rate",
        nodes=len(session.urls),
        pairs=len(session.pairs),
        window=session.window,
        offered_rate=rate,
        duration_s=round(sent.send_end - sent.start, 3),
        sent=len(run.sent_at),
        acked=len(run.acked),
        delivered=run.delivered_count,
        delivered_per_s=round(run.measured_delivered / sent.measured_s, 1),
        acked_per_s=round(run.measured_acked / sent.measured_s, 1),
        send_to_ack=Latency.of(run.ack_lat),
        send_to_delivery=Latency.of(run.deliv_lat),
        release_lag=None if rate is None else Latency.of(run.release_lag),
        errors=dict(run.errors),
        closes=dict(run.closes),
        check=check.summary(),
    )


async def chat_run(
    *,
    target: str,
    urls: Sequence[str],
    pairs: int,
    window: int,
    duration_s: float,
    messages: int,
    rate: float | None = None,
    warmup_s: float = 1.0,
    body_chars: int = 32,
    spread: str = "same",
    sources: int = 1,
    settings: Settings | None = None,
    drain_s: float = DRAIN_S,
    on_window: Callable[[str], None] | None = None,
) -> ChatReport:
    """Run one bounded chat load and return the report (check included): :func:`open_pairs`,
    :func:`send`, :func:`finish`."""
    session = await open_pairs(
        target=target,
        urls=urls,
        pairs=pairs,
        window=window,
        messages=messages,
        body_chars=body_chars,
        spread=spread,
        sources=sources,
        settings=settings,
    )
    sent = await send(
        session,
        duration_s=duration_s,
        rate=rate,
        warmup_s=warmup_s,
        drain_s=drain_s,
        on_window=on_window,
    )
    return await finish(session, sent, rate=rate, settings=settings)


@contextlib.contextmanager
def _no_collector_pauses() -> Iterator[None]:
    """No cyclic garbage collection while the generator measures.

    The run's bookkeeping (every cmid sent, acked and delivered) grows to hundreds of thousands
    of objects, and a full collection over them stopped this process for up to 47 ms (measured
    with ``gc.callbacks``), which the latency figures then charged to the server. The run is
    bounded in messages and seconds, so its garbage waits until the end.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def _undelivered(run: Run) -> int:
    return sum(1 for cmid, (_, to, _) in run.acked.items() if (to, cmid) not in run.delivered)


def due_now(elapsed_s: float, rate: float) -> int:
    """How many sends are due ``elapsed_s`` into a run at ``rate``/s: send k is due at k/rate.

    Counting from k = 0, so the first is due at once; without the +1 every send went out one
    interval late (5 ms at 200/s), which the latency figures charged to the server.
    """
    return math.floor(elapsed_s * rate) + 1


async def _offer(
    run: Run, clients: list[ChatClient], rate: float, start: float, deadline: float
) -> None:
    """Schedule sends at ``rate``/s round-robin over ``clients`` until ``deadline``."""
    if not clients:
        return
    for c in clients:
        c.rate_mode = True
    scheduled = 0
    ring = itertools.cycle(clients)
    max_ticks = int((deadline - start) / TICK_S) + 10
    for _ in range(max_ticks):
        now = time.perf_counter()
        if now >= deadline or run.remaining - sum(len(c.backlog) for c in clients) <= 0:
            break
        due = due_now(now - start, rate) - scheduled
        touched: set[ChatClient] = set()
        for k in range(due):
            c = next(ring)
            c.backlog.append(start + (scheduled + k) / rate)
            touched.add(c)
        scheduled += max(due, 0)
        for c in touched:
            c.refill()
        await asyncio.sleep(TICK_S)


# -- idle connections -----------------------------------------------------------------------


def node_gc_pauses(url: str) -> dict[str, tuple[float, float]] | None:
    """``{generation: (collections, seconds)}`` from a MergeMeet node's ``/metrics``, or None
    when the target exports none (the baseline)."""
    parts = urlsplit(check_loopback(url))
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        answer = connection.getresponse()
        if answer.status != 200:
            return None
        text = answer.read().decode()
    except OSError:
        return None
    finally:
        connection.close()
    found: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "mm_rt_gc_pause_seconds":
            continue
        for sample in family.samples:
            gen = sample.labels.get("generation", "")
            if sample.name.endswith("_count"):
                found.setdefault(gen, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_sum"):
                found.setdefault(gen, [0.0, 0.0])[1] = sample.value
    return {gen: (n, total) for gen, (n, total) in found.items()} or None


def pause_growth(
    before: dict[str, tuple[float, float]] | None, after: dict[str, tuple[float, float]] | None
) -> dict[str, dict[str, float]] | None:
    """Collections and seconds paused per generation between two :func:`node_gc_pauses`."""
    if before is None or after is None:
        return None
    return {
        gen: {
            "collections": n - before.get(gen, (0.0, 0.0))[0],
            "seconds": round(total - before.get(gen, (0.0, 0.0))[1], 4),
        }
        for gen, (n, total) in sorted(after.items())
    }


@dataclass
class IdleSockets:
    """Authenticated sockets that only listen: each entry a client, its URL and its token."""

    run: Run
    clients: list[tuple[ChatClient, str, str]]
    users: list[int]
    sources: int

    def opened(self) -> int:
        return sum(1 for c, _, _ in self.clients if c.ready.done() and not c.ready.exception())

    def held(self) -> int:
        return sum(1 for c, _, _ in self.clients if c.ws is not None and c.ws.open)

    def close(self) -> None:
        for c, _, _ in self.clients:
            c.close()

    async def connect(self, concurrency: int = CONNECT_CONCURRENCY) -> None:
        """Open them all, ``concurrency`` handshakes at a time (failures in ``run.errors``)."""
        await connect_all(self.clients, self.sources, timeout_s=60.0, concurrency=concurrency)

    async def reconnect(self, index: int, timeout_s: float = 30.0) -> bool:
        """Close socket ``index`` and open a fresh one for the same user, as a phone that
        lost its network does; False (and counted in ``run.errors``) when it failed."""
        old, url, token = self.clients[index]
        old.close()
        fresh = ChatClient(self.run, user=old.user, peer=0, cid=0, index=index, tag="idle")
        self.clients[index] = (fresh, url, token)
        source = source_address(index, self.sources)
        return await connect_one(fresh, url, token, source, timeout_s)


async def idle_sockets(
    *,
    target: str,
    urls: Sequence[str],
    connections: int,
    per_user: int = 10,
    settings: Settings | None = None,
) -> IdleSockets:
    """Users and tokens for ``connections`` sockets, ``per_user`` to a user, not yet open."""
    settings = settings or get_settings()
    adapter = make_adapter(target)
    urls = [with_path(check_loopback(u), adapter.path) for u in urls]
    raise_nofile(connections + 1024)
    users = await population.create_lone_users(
        settings.asyncpg_dsn, math.ceil(connections / per_user)
    )
    tokens = population.mint_tokens(settings, users)
    sources = min(MAX_SOURCES, math.ceil(connections / PER_SOURCE))
    run = Run(adapter=adapter, window=0, remaining=0, body="")
    clients = [
        (
            ChatClient(run, user=users[i // per_user], peer=0, cid=0, index=i, tag="idle"),
            urls[i % len(urls)],
            tokens[users[i // per_user]],
        )
        for i in range(connections)
    ]
    return IdleSockets(run, clients, users, sources)


async def idle_run(
    *,
    target: str,
    urls: Sequence[str],
    connections: int,
    node_pid: int,
    per_user: int = 10,
    hold_s: float = 5.0,
    settle_s: float = 2.0,
    settings: Settings | None = None,
    concurrency: int = CONNECT_CONCURRENCY,
) -> IdleReport:
    """Open ``connections`` authenticated sockets (``concurrency`` handshakes at a time), hold
    them, report the time to open them and the node's RSS growth."""
    idle = await idle_sockets(
        target=target, urls=urls, connections=connections, per_user=per_user, settings=settings
    )
    first_url = idle.clients[0][1]
    before = rss_kb(node_pid)
    gc_before = await asyncio.to_thread(node_gc_pauses, first_url)
    started = time.perf_counter()
    await idle.connect(concurrency)
    open_s = time.perf_counter() - started
    opened = idle.opened()
    await asyncio.sleep(settle_s)
    after = rss_kb(node_pid)
    run = idle.run
    run.sending = True  # closes from here on are counted
    await asyncio.sleep(hold_s)
    held = idle.held()
    gc_after = await asyncio.to_thread(node_gc_pauses, first_url)
    run.sending = False
    idle.close()
    await asyncio.sleep(0.5)
    return IdleReport(
        target=target,
        requested=connections,
        opened=opened,
        held=held,
        users=len(idle.users),
        sources=idle.sources,
        rss_before_kb=before,
        rss_after_kb=after,
        rss_per_connection_kb=round((after - before) / max(opened, 1), 2),
        open_s=round(open_s, 2),
        hold_s=hold_s,
        gc_pauses=pause_growth(gc_before, gc_after),
        errors=dict(run.errors),
        closes=dict(run.closes),
    )


# -- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.generator", description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("peak", "rate", "idle"):
        p = sub.add_parser(mode)
        p.add_argument("--target", choices=("mergemeet", "baseline"), default="mergemeet")
        p.add_argument("--url", action="append", required=True, help="node URL (repeatable)")
        p.add_argument("--json", type=Path, help="also write the report as JSON here")
        if mode == "idle":
            p.add_argument("--connections", type=int, default=1000)
            p.add_argument("--node-pid", type=int, required=True)
            p.add_argument("--per-user", type=int, default=10)
            p.add_argument("--hold", type=float, default=5.0)
            continue
        p.add_argument("--pairs", type=int, default=100)
        p.add_argument("--window", type=int, default=8, help="unacked sends per client")
        p.add_argument("--duration", type=float, default=10.0)
        p.add_argument("--messages", type=int, default=1_000_000, help="cap on sends")
        p.add_argument("--warmup", type=float, default=1.0)
        p.add_argument("--body", type=int, default=32, help="body characters")
        p.add_argument("--spread", choices=("same", "cross"), default="same")
        if mode == "rate":
            p.add_argument("--rate", type=float, required=True, help="offered messages/s")
    return parser.parse_args(argv)


async def amain(args: argparse.Namespace) -> ChatReport | IdleReport:
    if args.mode == "idle":
        return await idle_run(
            target=args.target,
            urls=args.url,
            connections=args.connections,
            node_pid=args.node_pid,
            per_user=args.per_user,
            hold_s=args.hold,
        )
    return await chat_run(
        target=args.target,
        urls=args.url,
        pairs=args.pairs,
        window=args.window,
        duration_s=args.duration,
        messages=args.messages,
        rate=args.rate if args.mode == "rate" else None,
        warmup_s=args.warmup,
        body_chars=args.body,
        spread=args.spread,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = uvloop.run(amain(args))
    print("\n".join(report.lines()))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.as_dict(), indent=2))
    if isinstance(report, ChatReport) and not report.check["ok"]:
        sys.exit(2)


if __name__ == "__main__":
    main()
