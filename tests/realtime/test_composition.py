"""The composition root builds the node the one way the server runs it, and wires it by
construction only: every hook is the real part, and nothing is assigned to a part once built.

Builds :meth:`realtime.server.Services.build` against the test PostgreSQL and Redis, with every
class of the node's parts watched: an attribute written after that object's ``__init__``
returned is recorded when its value is a callable or another part (wiring, as opposed to state
such as a loaded word list or a stream id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from common.settings import Settings
from realtime import (
    aftercommit,
    batch,
    broker,
    fanout,
    hub,
    moderation,
    node,
    notices,
    ops,
    presence,
    presencebackend,
    safety,
    safetyfeed,
    safetystate,
    server,
    store,
    wsserver,
)
from realtime.metrics import render
from realtime.sockets import memberships_of

PARTS: tuple[type[Any], ...] = (
    aftercommit.AfterCommit,
    batch.BatchWriter,
    broker.RedisBroker,
    fanout.Fanout,
    hub.Hub,
    moderation.ModerationGate,
    node.Node,
    notices.MessageNotices,
    ops.Load,
    ops.NodeOps,
    ops.Ops,
    presence.Presence,
    presencebackend.RedisPresence,
    safety.SafetyConsumer,
    safetyfeed.RedisSafetyFeed,
    safetystate.SafetyState,
    store.Store,
    wsserver.WsServer,
)


class Writes:
    """Attribute writes to built parts, recorded by patched ``__init__``/``__setattr__``."""

    def __init__(self) -> None:
        self.built: set[int] = set()
        self.wiring: list[tuple[str, str]] = []

    def watch(self, monkeypatch: pytest.MonkeyPatch, cls: type[Any]) -> None:
        original_init: Callable[..., None] = cls.__init__
        original_setattr: Any = cls.__setattr__
        built, wiring = self.built, self.wiring

        def init(obj: Any, *args: Any, **kwargs: Any) -> None:
            original_init(obj, *args, **kwargs)
            built.add(id(obj))

        def setattr_(obj: Any, name: str, value: Any) -> None:
            if id(obj) in built and (callable(value) or isinstance(value, PARTS)):
                wiring.append((type(obj).__name__, name))
            original_setattr(obj, name, value)

        monkeypatch.setattr(cls, "__init__", init)
        monkeypatch.setattr(cls, "__setattr__", setattr_)


@pytest.fixture
async def built(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[server.Services, Writes]]:
    writes = Writes()
    for cls in PARTS:
        writes.watch(monkeypatch, cls)
    services = await server.Services.build(settings)
    yield services, writes
    await services.safety.close()
    await services.broker.close()
    await services.moderation.close()
    await services.notices.close()
    await services.pool.close()


async def test_nothing_is_wired_after_construction(
    built: tuple[server.Services, Writes],
) -> None:
    _services, writes = built
    # The recorder saw every part being built (one instance of each class).
    assert len(writes.built) == len(PARTS)
    assert writes.wiring == []


async def test_every_hook_is_the_real_part(built: tuple[server.Services, Writes]) -> None:
    services, _writes = built
    n = services.node
    after = n.after_commit
    assert services.writer.on_done == after.on_outcomes
    assert after.fanout is n.fanout and after.notices is services.notices
    assert after.commit_seconds() == services.writer.last_flush_s
    assert n.fanout.hub is n.hub and n.fanout.broker is services.broker
    assert n.fanout.presence is services.presence is n.presence
    assert n.hub.gate == n.safety.admits
    assert services.safety.state is n.safety
    assert services.safety.node is n
    assert services.safety.reload_moderation == services.moderation.reload
    assert n.send_gate == services.moderation.take
    assert n.on_account == services.moderation.note_user
    assert n.writer is services.writer is services.moderation.writer
    assert services.presence.hub is n.hub and services.presence.broker is services.broker
    assert services.presence.view is memberships_of
    assert isinstance(services.presence.backend, presencebackend.RedisPresence)
    assert services.presence.backend.redis is services.broker.redis
    assert isinstance(services.safety.feed, safetyfeed.RedisSafetyFeed)
    assert services.notices.is_local == n.hub.has
    # The heartbeat's figures come from the writer and the broker, not the default ``dict``.
    assert set(services.broker.load()) == {
        "messages_per_s",
        "batch_size_avg",
        "commit_ms_avg",
        "delivery_lag_ms",
    }
    assert services.server._process_request == services.ops.ops.process_request
    assert b"mm_rt_connections_open 0.0" in render(services.ops.registry)
