"""The browser pages: the demo chat client (``/demo``), the ops page (``/ops``) and their files.

The pages are static files in ``api/static`` (plain HTML, CSS and JavaScript, no build step).
They speak only the public REST API and the realtime protocol of ``docs/PROTOCOL.md``; the one
thing they learn from here is where the realtime server is (``/web/config``, no secrets). The
ops page's data comes from ``/api/admin/nodes``, which requires an admin like every admin route.

Must not: serve anything outside the fixed file table (no path from the request reaches the
filesystem), put a token in a URL, or hold any logic the REST routes or the protocol own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from fastapi import APIRouter, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

from api.deps import AdminUser, RedisDep, SettingsDep
from api.errors import NotFound, Unavailable
from api.services.admin_stats import STALE_HEARTBEATS
from common.cluster import live_nodes
from common.redisedge import REDIS_FAILURES
from common.settings import Settings

router = APIRouter(tags=["web"])

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"
_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


def _file_table() -> dict[str, Path]:
    """Every servable file by name, read once: requests pick from this table, never a path.

    An install without the folder serves no page rather than failing to start the API.
    """
    if not STATIC_DIR.is_dir():
        return {}
    return {
        path.name: path
        for path in sorted(STATIC_DIR.iterdir())
        if path.is_file() and path.suffix in _TYPES
    }


_FILES: Final = _file_table()


def _origin(url: str) -> str:
    """``ws://host:port/path`` → ``ws://host:port`` (what a CSP source names)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _headers(settings: Settings) -> dict[str, str]:
    # The pages load only their own files and talk only to this API and the realtime node.
    csp = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        f"connect-src 'self' {_origin(settings.realtime_public_url)}; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _serve(name: str, settings: Settings) -> Response:
    path = _FILES.get(name)
    if path is None:
        raise NotFound("no such file")
    return Response(path.read_bytes(), media_type=_TYPES[path.suffix], headers=_headers(settings))


class WebConfig(BaseModel):
    """What a browser client needs to find the realtime server."""

    realtime_url: str


class NodeRow(BaseModel):
    id: str
    address: str
    started_at: float
    uptime_s: float
    heartbeat_age_s: float
    connections: int
    users: int
    messages_per_s: float
    batch_size_avg: float
    commit_ms_avg: float
    delivery_lag_ms: float


class ClusterTotals(BaseModel):
    nodes: int
    connections: int
    users: int
    messages_per_s: float
    #: The worst node's delivery lag: the cluster is as late as its latest node.
    delivery_lag_ms_max: float


class ClusterView(BaseModel):
    time: float
    nodes: list[NodeRow]
    totals: ClusterTotals


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/demo")


@router.get("/demo", include_in_schema=False)
async def demo_page(settings: SettingsDep) -> Response:
    return _serve("demo.html", settings)


@router.get("/ops", include_in_schema=False)
async def ops_page(settings: SettingsDep) -> Response:
    return _serve("ops.html", settings)


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str, settings: SettingsDep) -> Response:
    return _serve(name, settings)


@router.get("/web/config", response_model=WebConfig)
async def web_config(settings: SettingsDep) -> WebConfig:
    """Where browser clients connect for realtime chat."""
    return WebConfig(realtime_url=settings.realtime_public_url)


@router.get("/api/admin/nodes", response_model=ClusterView, tags=["admin"])
async def cluster_nodes(admin: AdminUser, redis: RedisDep, settings: SettingsDep) -> ClusterView:
    """The live realtime nodes from their heartbeats, with totals across the cluster."""
    try:
        nodes = await live_nodes(redis, stale_after_s=settings.heartbeat_s * STALE_HEARTBEATS)
    except REDIS_FAILURES as exc:
        raise Unavailable("node heartbeats unavailable", code="redis_unavailable") from exc
    now = time.time()
    rows = [
        NodeRow(
            id=node.id,
            address=node.address,
            started_at=node.started_at,
            uptime_s=max(0.0, now - node.started_at),
            heartbeat_age_s=max(0.0, now - node.heartbeat_at),
            connections=node.connections,
            users=node.users,
            messages_per_s=node.messages_per_s,
            batch_size_avg=node.batch_size_avg,
            commit_ms_avg=node.commit_ms_avg,
            delivery_lag_ms=node.delivery_lag_ms,
        )
        for node in nodes
    ]
    totals = ClusterTotals(
        nodes=len(rows),
        connections=sum(r.connections for r in rows),
        users=sum(r.users for r in rows),
        messages_per_s=sum(r.messages_per_s for r in rows),
        delivery_lag_ms_max=max((r.delivery_lag_ms for r in rows), default=0.0),
    )
    return ClusterView(time=now, nodes=rows, totals=totals)
