"""Redis Cluster readiness, checked on a real run: every Lua script call, MULTI transaction and
multi-key command the nodes send touches keys of one hash slot.

The test Redis is watched with ``MONITOR`` while two nodes chat across nodes (the routes and
delivery scripts), a node's heartbeat renews its lease (a script), and a killed node is reaped
(its keys deleted, its users' offline script run). Each call's keys are grouped by
``redis.crc.key_slot``; the test also fails if a script it means to cover was never called.
It runs with the users' tag count of one Redis (1) and of a cluster (16, ``MM_REDIS_USER_SLOTS``
given to both nodes), so grouping by tag is checked where it does something.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from common.cluster import LEASE
from common.settings import CLUSTER_USER_SLOTS
from realtime.broker import ROUTES, XADD
from realtime.presencebackend import OFFLINE
from tests.db_support import TEST_REDIS_URL
from tests.realtime.conftest import client, start_node
from tests.support import TICK, ServiceProcess

TTL = 30 * TICK
GRACE = 10 * TICK
ENV = {"MM_PRESENCE_TTL_S": str(TTL), "MM_PRESENCE_GRACE_S": str(GRACE)}
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
_LINE = re.compile(r"^\+[\d.]+ \[\d+ ([^\]]+)\] (.*)$")
#: Commands whose every argument is a key (the others' key is their first argument).
ALL_KEYS = frozenset({"DEL", "UNLINK", "EXISTS", "MGET", "TOUCH", "WATCH"})
#: Commands that name no key.
NO_KEY = frozenset({"MULTI", "EXEC", "DISCARD", "PING", "HELLO", "SELECT", "CLIENT", "SCRIPT"})


@dataclass
class Record:
    """What MONITOR showed, grouped: each call whose keys must share a slot."""

    scripts: list[tuple[str, list[str]]] = field(default_factory=list)
    transactions: list[list[str]] = field(default_factory=list)
    multi_key: list[list[str]] = field(default_factory=list)
    _open: dict[str, list[str]] = field(default_factory=dict)

    def add(self, line: str) -> None:
        match = _LINE.match(line)
        if match is None or match.group(1) == "lua":
            return  # not a command, or one a script ran (its keys are the script's)
        client_addr, args = match.group(1), _ARG.findall(match.group(2))
        name = args[0].upper()
        if name == "MULTI":
            self._open[client_addr] = []
        elif name in ("EXEC", "DISCARD"):
            self.transactions.append(self._open.pop(client_addr, []))
        elif name in ("EVALSHA", "EVAL"):
            self.scripts.append((args[1], args[3 : 3 + int(args[2])]))
        elif client_addr in self._open:
            self._open[client_addr] += keys_of(name, args)
        elif name in ALL_KEYS and len(args) > 2:
            self.multi_key.append(args[1:])


def keys_of(name: str, args: list[str]) -> list[str]:
    if name in NO_KEY:
        return []
    return args[1:] if name in ALL_KEYS else args[1:2]


def slots(keys: list[str]) -> set[int]:
    return {key_slot(key.encode()) for key in keys}


async def monitor(record: Record, stop: asyncio.Event) -> None:
    url = urlsplit(TEST_REDIS_URL)
    reader, writer = await asyncio.open_connection(url.hostname, url.port or 6379)
    writer.write(b"MONITOR\r\n")
    await writer.drain()
    try:
        while not stop.is_set():
            try:
                line = await asyncio.wait_for(reader.readline(), TICK)
            except TimeoutError:
                continue
            record.add(line.decode(errors="replace").rstrip("\r\n"))
    finally:
        writer.close()


@pytest.fixture(params=[1, CLUSTER_USER_SLOTS], ids=["one-tag", "cluster-tags"])
def user_slots(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def node_a(redis: Redis, user_slots: int) -> Iterator[ServiceProcess]:
    proc = start_node("sa", **ENV, MM_REDIS_USER_SLOTS=str(user_slots))
    yield proc
    assert proc.stop() == 0, f"node did not stop cleanly, see {proc.log_path}"


async def test_every_script_transaction_and_multi_key_command_touches_one_slot(
    user_slots: int,
    node_a: ServiceProcess,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
) -> None:
    record, stop = Record(), asyncio.Event()
    watcher = asyncio.create_task(monitor(record, stop))
    await asyncio.sleep(2 * TICK)
    users = [await new_user() for _ in range(6)]
    alice, peers = users[0], users[1:]
    cids = [await new_conversation(alice, peer) for peer in peers]
    doomed = start_node("sc", **ENV, MM_REDIS_USER_SLOTS=str(user_slots))
    a = await client(f"ws://127.0.0.1:{node_a.port}/", make_token(alice))
    try:
        others = [
            await client(f"ws://127.0.0.1:{doomed.port}/", make_token(peer)) for peer in peers
        ]
        for cid, other in zip(cids, others, strict=True):
            await a.send_msg(cid, "across nodes")
            assert (await other.expect("msg", cid=cid))["body"] == "across nodes"
        await asyncio.sleep(TTL / 2)  # a heartbeat or two of each node
        doomed.signal(signal.SIGKILL)
        assert doomed.proc is not None and doomed.proc.wait(20 * TICK) == -signal.SIGKILL
        # The survivor reaps the dead node: its keys go, its users' offline script runs.
        loop = asyncio.get_running_loop()
        deadline, states = loop.time() + TTL + 40 * TICK, set()
        while "offline" not in states and loop.time() < deadline:
            push = await a.expect("presence", timeout=deadline - loop.time())
            states |= {entry["state"] for entry in push["users"]}
        assert "offline" in states
    finally:
        doomed.stop()
        await a.close()
        await asyncio.sleep(2 * TICK)
        stop.set()
        await watcher

    called = {sha for sha, _ in record.scripts}
    assert {ROUTES.sha, XADD.sha, OFFLINE.sha, LEASE.sha} <= called, called
    assert record.multi_key
    assert [(sha, keys) for sha, keys in record.scripts if len(slots(keys)) > 1] == []
    assert [keys for keys in record.transactions if len(slots(keys)) > 1] == []
    assert [keys for keys in record.multi_key if len(slots(keys)) > 1] == []
    # The recipients' routes were looked up in as many slots as the users' tags allow (with
    # more than one tag, grouping did something).
    routes = [keys for sha, keys in record.scripts if sha == ROUTES.sha]
    assert len(slots([key for keys in routes for key in keys])) >= min(user_slots, 2)
