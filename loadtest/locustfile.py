"""locust scenarios (``make loadtest``): people who sign up, match and chat, REST and WebSocket.

Owns the realistic, slow-per-user load: each simulated person registers (or logs in when the
account exists), fills in a bio and a location near the others, browses discovery, then is
paired with the next person who arrives (a board in this process) so that their two likes make a
match; both open a WebSocket to the realtime node (``MM_LOADTEST_WS``, loopback only), sync,
and chat with think times: typing notices, messages, read receipts, and now and then a
reconnect followed by a sync. :class:`ChatUser` reports ``send→ack`` and ``send→delivery`` as
locust request events (type ``WS``), so locust's statistics and charts show them next to the
REST calls. Peak figures are not measured here (one greenlet per user is far too slow for
that): see :mod:`loadtest.generator`.

Run it against a stack started with generous sign-up limits, e.g.
``MM_REGISTER_IP_MAX=100000 MM_LOGIN_IP_MAX=100000 make run``, then ``make loadtest``.
"""

from __future__ import annotations

import io
import json
import os
import random
import secrets
import threading
import time
from typing import Any, Final
from urllib.parse import urlsplit

from locust import HttpUser, between, events, task
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

WS_URL: Final = os.environ.get("MM_LOADTEST_WS", "ws://127.0.0.1:8765/")
PASSWORD: Final = "load-test-Pa55word!"  # noqa: S105 - throwaway load-test accounts
#: Every wait is bounded: a scenario never blocks for longer than this on one frame.
FRAME_TIMEOUT_S: Final = 10.0
MESSAGES_PER_SESSION: Final = 20

_board_lock = threading.Lock()
_waiting: list[tuple[int, ChatUser]] = []
#: cmid -> monotonic send time, shared by sender and recipient (same process).
_sent_at: dict[str, float] = {}


def _photo() -> bytes:
    """A small PNG made here (Pillow), different per user."""
    from PIL import Image

    colour = tuple(random.randrange(256) for _ in range(3))
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _loopback(url: str) -> str:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing a non-loopback target: {url}")
    return url


@events.init.add_listener  # type: ignore[untyped-decorator]
def _check_targets(environment: Any, **_kwargs: Any) -> None:
    _loopback(WS_URL)
    if environment.host:
        _loopback(environment.host)


class ChatUser(HttpUser):
    """One person: account, profile, discovery, a match, then chat sessions on a WebSocket."""

    wait_time = between(1, 3)

    def on_start(self) -> None:
        self.email = f"locust-{secrets.token_hex(6)}@example.com"
        self.user_id = 0
        self.token = ""
        self.cid: int | None = None
        self.partner: ChatUser | None = None
        self.ws: ClientConnection | None = None
        self.last_seq: dict[int, int] = {}
        self.lock = threading.Lock()
        self._sign_up()
        self._profile()

    def on_stop(self) -> None:
        self._close_ws()

    # -- REST ---------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _sign_up(self) -> None:
        body = {
            "email": self.email,
            "password": PASSWORD,
            "birth_date": "1995-05-17",
            "display_name": "Load Tester",
            "gender": random.choice(["woman", "man", "nonbinary"]),
        }
        with self.client.post("/api/auth/register", json=body, catch_response=True) as r:
            if r.status_code == 409:  # the account exists: log in instead
                r.success()
                r = self.client.post(
                    "/api/auth/login", json={"email": self.email, "password": PASSWORD}
                )
            if r.status_code not in (200, 201):
                r.failure(f"sign-up {r.status_code}")
                return
            self.token = r.json()["access_token"]
        me = self.client.get("/api/auth/me", headers=self._headers())
        if me.ok:
            self.user_id = int(me.json()["id"])

    def _profile(self) -> None:
        """A complete profile (3 interests, a photo, a location): discovery and likes need it."""
        if not self.token:
            return
        listed = self.client.get("/api/interests", headers=self._headers())
        slugs = [i["slug"] for i in listed.json()["interests"]][:8] if listed.ok else []
        body: dict[str, Any] = {"bio": "here for the load test"}
        if len(slugs) >= 3:
            body["interests"] = random.sample(slugs, 3)
        self.client.patch("/api/profiles/me", json=body, headers=self._headers())
        self.client.post(
            "/api/photos",
            files={"file": ("me.png", _photo(), "image/png")},
            headers=self._headers(),
        )
        # Everyone near Lisbon, a few km apart, so discovery has candidates.
        location = {"lat": 38.72 + random.uniform(-0.05, 0.05), "lon": -9.14}
        self.client.put("/api/profiles/me/location", json=location, headers=self._headers())

    @task(1)
    def discover(self) -> None:
        if self.token:
            self.client.get("/api/discovery", headers=self._headers(), name="/api/discovery")

    @task(2)
    def find_a_match(self) -> None:
        if not self.token or self.cid is not None or not self.user_id:
            return
        with _board_lock:
            partner = _waiting.pop(0)[1] if _waiting else None
            if partner is None:
                _waiting.append((self.user_id, self))
                return
        # Both like each other: the second like answers matched with the conversation id.
        self.client.post("/api/likes", json={"target_id": self.user_id}, headers=partner._headers())
        r = self.client.post(
            "/api/likes", json={"target_id": partner.user_id}, headers=self._headers()
        )
        if r.ok and r.json().get("matched"):
            cid = int(r.json()["conversation_id"])
            self.cid, partner.cid = cid, cid
            self.partner, partner.partner = partner, self
        self.client.get("/api/matches", headers=self._headers())

    @task(6)
    def chat_session(self) -> None:
        """Connect, sync, chat for a while with think times, sometimes drop and reconnect."""
        if self.cid is None:
            return
        if self.ws is None and not self._open_ws():
            return
        for _ in range(random.randint(3, MESSAGES_PER_SESSION)):
            if self.ws is None:
                return
            self._send_frame({"type": "typing", "cid": self.cid, "on": True})
            time.sleep(random.uniform(0.2, 1.0))  # typing...
            cmid = f"l{secrets.token_hex(8)}"
            _sent_at[cmid] = time.perf_counter()
            self._send_frame(
                {"type": "send", "cid": self.cid, "cmid": cmid, "body": "hello there", "rid": cmid}
            )
            time.sleep(random.uniform(0.5, 2.0))
        if random.random() < 0.3:
            self._close_ws()  # a phone going through a tunnel: the next session reconnects

    # -- WebSocket ----------------------------------------------------------------------------

    def _event(self, name: str, started: float, length: int, error: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=error,
            context={},
        )

    def _open_ws(self) -> bool:
        started = time.perf_counter()
        try:
            ws = connect(
                WS_URL,
                additional_headers=self._headers(),
                open_timeout=FRAME_TIMEOUT_S,
                close_timeout=2,
                legacy=True,  # the socket outlives this call: it is closed by _close_ws
            )
            ready = json.loads(ws.recv(timeout=FRAME_TIMEOUT_S))
            if ready.get("type") != "ready":
                raise ConnectionError(f"expected ready, got {ready.get('type')}")
        except (OSError, TimeoutError, ConnectionClosed, ConnectionError) as exc:
            self._event("connect+ready", started, 0, exc)
            return False
        self._event("connect+ready", started, 0, None)
        self.ws = ws
        self._send_frame(
            {"type": "sync", "convs": {str(c): s for c, s in self.last_seq.items()}, "rid": "s"}
        )
        self._sync_started = time.perf_counter()
        threading.Thread(target=self._reader, args=(ws,), daemon=True).start()
        return True

    def _close_ws(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            ws.close()

    def _send_frame(self, frame: dict[str, Any]) -> None:
        ws = self.ws
        if ws is None:
            return
        try:
            ws.send(json.dumps(frame))
        except (ConnectionClosed, OSError):
            self.ws = None

    def _reader(self, ws: ClientConnection) -> None:
        """Frames in until the socket closes (a greenlet under locust's gevent)."""
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            try:
                raw = ws.recv(timeout=60)
            except (ConnectionClosed, TimeoutError, OSError):
                return
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "ack":
                sent = _sent_at.get(frame["cmid"])
                if sent is not None:
                    self._event("send→ack", sent, len(raw), None)
                self._held(frame["cid"], frame["seq"])
            elif kind == "msg":
                sent = _sent_at.get(frame["cmid"])
                if sent is not None:
                    self._event("send→delivery", sent, len(raw), None)
                self._held(frame["cid"], frame["seq"])
                if frame.get("sender") != self.user_id:
                    self._send_frame({"type": "read", "cid": frame["cid"], "seq": frame["seq"]})
            elif kind == "sync":
                for m in frame["msgs"]:
                    self._held(m["cid"], m["seq"])
                if frame["end"]:
                    self._event("sync", self._sync_started, len(raw), None)
                else:
                    self._send_frame(
                        {"type": "sync", "convs": {str(c): s for c, s in self.last_seq.items()}}
                    )
            elif kind == "error":
                error = RuntimeError(frame.get("code"))
                self._event(f"error:{frame.get('code')}", time.perf_counter(), len(raw), error)

    def _held(self, cid: int, seq: int) -> None:
        with self.lock:
            self.last_seq[cid] = max(self.last_seq.get(cid, 0), seq)
