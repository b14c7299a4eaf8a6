"""Both services start as real processes, answer their health checks and stop cleanly."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.support import TICK, ServiceProcess, free_port

# The realtime process test starts a real node (on the test database and Redis).
pytestmark = pytest.mark.integration


async def test_api_answers_health_and_readiness(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    response = await api.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready"}


async def test_api_errors_are_json_with_a_code(api: httpx.AsyncClient) -> None:
    response = await api.get("/no/such/route")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_realtime_process_answers_healthz_and_stops_on_sigterm() -> None:
    port = free_port()
    node = ServiceProcess("realtime", port, {"MM_REALTIME_PORT": str(port)}).start()
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=50 * TICK)
        assert response.status_code == 200
        assert response.text == "ok\n"
        node.signal(signal.SIGTERM)
        assert node.proc is not None
        assert node.proc.wait(100 * TICK) == 0
    finally:
        node.stop()
