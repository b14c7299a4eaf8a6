"""The sans-I/O protocol core of one realtime connection: frames in, frames and actions out.

Owns what a frame means: decoding with limits, the auth state machine (timeout, reauth notice,
lapse), the per-connection token bucket, membership and block checks against the cached
:class:`~realtime.domain.Memberships`, and the encoding of every frame it answers with. It never
awaits, never reads the clock (``now`` is an argument, epoch seconds) and never raises on bad
input: bad input becomes an ``error`` frame, and only protocol abuse becomes a close.

The driver (:mod:`realtime.connection`) feeds it with ``receive_*``, ``tick`` and the results of
the actions it asked for, then drains :meth:`Protocol.take`: :class:`Out` frames to write,
:class:`CloseOut` to close, and action objects (auth, persist, typing, sync, refresh) to perform.
Safety events reach it as inputs too, through the driver's side of the socket-state seam
(:mod:`realtime.sockets`): :meth:`~Protocol.conversation_closed`,
:meth:`~Protocol.peer_blocked`, :meth:`~Protocol.conversation_opened` and
:meth:`~Protocol.token_revoked`, which answers with the :class:`CloseOut` to perform.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import msgspec

from common import wire
from common.codes import RETRYABLE, Close, Err
from realtime.domain import (
    Memberships,
    ReadOutcome,
    ReadRequest,
    SendOutcome,
    SendRequest,
    StoredMessage,
)
from realtime.metrics import TALLY


@dataclass(frozen=True, slots=True)
class Config:
    """Limits and timings of a connection (built once per node from settings)."""

    node_id: str = "node"
    max_frame_bytes: int = 64 * 1024
    max_body_chars: int = 4000
    rate_per_s: float = 20.0
    rate_burst: int = 40
    auth_timeout_s: float = 5.0
    reauth_before_s: float = 60.0
    heartbeat_s: float = 15.0
    sync_page_size: int = 200
    typing_interval_s: float = 1.0
    typing_ttl_s: float = 6.0
    membership_refresh_s: float = 1.0
    max_inflight: int = 1000


class State(enum.Enum):
    AWAIT_AUTH = "await_auth"
    OPEN = "open"
    CLOSED = "closed"


# -- outputs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Out:
    """An encoded text frame to write to this socket."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseOut:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class AuthAction:
    """Verify ``token`` and call :meth:`Protocol.auth_succeeded` or :meth:`auth_failed`."""

    token: str
    rid: str | None
    refresh: bool


@dataclass(frozen=True, slots=True)
class PersistSend:
    request: SendRequest


@dataclass(frozen=True, slots=True)
class PersistRead:
    request: ReadRequest


@dataclass(frozen=True, slots=True)
class TypingAction:
    """Deliver ``data`` (an encoded ``typing`` frame) to ``peers``; never persisted."""

    cid: int
    peers: tuple[int, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class SyncAction:
    """Read up to ``limit`` messages after each position and call :meth:`sync_finished`."""

    positions: dict[int, int]
    limit: int
    rid: str | None
    gone: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RefreshAction:
    """Reload memberships, then call :meth:`memberships_loaded` with ``retry``."""

    retry: wire.ClientFrame


@dataclass(frozen=True, slots=True)
class PresenceAction:
    """Answer a ``presence`` query for ``users`` (unknown for anyone not visible)."""

    users: tuple[int, ...]
    rid: str | None


Output = (
    Out
    | PresenceAction
    | CloseOut
    | AuthAction
    | PersistSend
    | PersistRead
    | TypingAction
    | SyncAction
    | RefreshAction
)


# -- pieces -----------------------------------------------------------------------------------


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; :meth:`take` is False when empty."""

    rate: float
    burst: int
    tokens: float = -1.0
    last: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.last = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def ms(now: float) -> int:
    return int(now * 1000)


def classify_decode_error(exc: msgspec.MsgspecError) -> Err:
    """Map a msgspec failure to the most precise error code (its text is fixed by msgspec)."""
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError) or (
        "Expected `object`" in text and "at `$" not in text
    ):
        return Err.BAD_JSON
    if "`$.type`" in text or "missing required field `type`" in text:
        return Err.UNKNOWN_TYPE
    if "`$.body`" in text and "length" in text:
        return Err.BODY_TOO_LONG
    return Err.BAD_FIELD


def error_frame(code: Err, rid: str | None = None, message: str = "") -> bytes:
    return wire.encode(
        wire.Error(code=code.value, retryable=code in RETRYABLE, message=message, rid=rid)
    )


# -- the core ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Protocol:
    """One connection's state. Create it when the socket opens; feed it; drain :meth:`take`."""

    config: Config
    session: str
    now: float
    header_token: str | None = None
    state: State = State.AWAIT_AUTH
    user_id: int = 0
    #: The ``ver`` claim of the token this socket last authenticated with (a token bump closes
    #: only sockets whose token is older).
    token_version: int = 0
    expires_at: float = 0.0
    reauth_sent: bool = False
    memberships: Memberships | None = None
    inflight: int = 0
    auth_deadline: float = 0.0
    _out: list[Output] = field(default_factory=list)
    _bucket: TokenBucket = field(init=False)
    _typing: dict[int, tuple[bool, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._bucket = TokenBucket(self.config.rate_per_s, self.config.rate_burst)
        self.auth_deadline = self.now + self.config.auth_timeout_s
        if self.header_token is not None:
            self._out.append(AuthAction(self.header_token, None, refresh=False))

    # -- draining ----------------------------------------------------------------------------

    def take(self) -> list[Output]:
        """Everything produced since the last call, in order."""
        out, self._out = self._out, []
        return out

    @property
    def is_open(self) -> bool:
        return self.state is State.OPEN

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (epoch seconds), if ever."""
        if self.state is State.AWAIT_AUTH:
            return self.auth_deadline
        if self.state is State.OPEN:
            if not self.reauth_sent:
                return max(self.expires_at - self.config.reauth_before_s, 0.0)
            return self.expires_at
        return None

    # -- inputs ------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Fire the auth timeout, the reauth notice and the token lapse when due."""
        if self.state is State.AWAIT_AUTH and now >= self.auth_deadline:
            self.close(Close.AUTH_TIMEOUT, "no token in time")
        elif self.state is State.OPEN:
            if now >= self.expires_at:
                self.close(Close.TOKEN_LAPSED, "token expired")
            elif not self.reauth_sent and now >= self.expires_at - self.config.reauth_before_s:
                self.reauth_sent = True
                self._send(wire.Reauth(expires_at=ms(self.expires_at)))

    def close(self, code: int, reason: str = "") -> None:
        """Close once; later input is ignored."""
        closing = self._closing(code, reason)
        if closing is not None:
            self._out.append(closing)

    def _closing(self, code: int, reason: str) -> CloseOut | None:
        """Enter CLOSED and return the close to perform (None when already closed)."""
        if self.state is State.CLOSED:
            return None
        self.state = State.CLOSED
        TALLY.close(int(code))
        return CloseOut(int(code), reason)

    def receive_binary(self, now: float) -> None:
        self.close(Close.PROTOCOL_VIOLATION, "binary frames are not part of the protocol")

    def receive_text(self, data: str | bytes, now: float) -> None:
        if self.state is State.CLOSED:
            return
        try:
            frame: wire.ClientFrame = wire.client_decoder.decode(data)
        except msgspec.MsgspecError as exc:
            TALLY.invalid_frames += 1
            if self.state is State.AWAIT_AUTH:
                self.close(Close.PROTOCOL_VIOLATION, "auth first")
            else:
                self._error(classify_decode_error(exc), None, str(exc)[:200])
            return
        TALLY.frames_in[type(frame)] += 1
        if self.state is State.AWAIT_AUTH:
            if isinstance(frame, wire.Auth):
                self._out.append(AuthAction(frame.token, frame.rid, refresh=False))
            else:
                self.close(Close.PROTOCOL_VIOLATION, "auth first")
            return
        if not self._bucket.take(now):
            self._error(Err.RATE_LIMITED, frame.rid)
            return
        self._dispatch(frame, now, allow_refresh=True)

    def _dispatch(self, frame: wire.ClientFrame, now: float, *, allow_refresh: bool) -> None:
        match frame:
            case wire.Send():
                self._on_send(frame, now, allow_refresh)
            case wire.Read():
                peers = self._access(frame, frame.cid, now, allow_refresh)
                if peers is not None:
                    request = ReadRequest(self.user_id, frame.cid, frame.seq, frame.rid, peers)
                    self._out.append(PersistRead(request))
            case wire.Typing():
                self._on_typing(frame, now, allow_refresh)
            case wire.Sync():
                self._on_sync(frame, allow_refresh)
            case wire.Ping():
                self._send(wire.Pong(time=ms(now), rid=frame.rid))
            case wire.Auth():
                self._out.append(AuthAction(frame.token, frame.rid, refresh=True))
            case wire.PresenceQuery():
                if self.memberships is None and allow_refresh:
                    self._out.append(RefreshAction(frame))
                else:
                    self._out.append(PresenceAction(tuple(frame.users), frame.rid))

    def _on_send(self, frame: wire.Send, now: float, allow_refresh: bool) -> None:
        if len(frame.body) > self.config.max_body_chars:
            self._error(Err.BODY_TOO_LONG, frame.rid, f"at most {self.config.max_body_chars}")
            return
        if "\x00" in frame.body:
            self._error(Err.BAD_FIELD, frame.rid, "NUL in body")
            return
        if self.inflight >= self.config.max_inflight:
            self._error(Err.RATE_LIMITED, frame.rid, "too many unacknowledged sends")
            return
        peers = self._access(frame, frame.cid, now, allow_refresh)
        if peers is None:
            return
        self.inflight += 1
        request = SendRequest(
            self.user_id, frame.cid, frame.cmid, frame.body, frame.kind, frame.rid, peers, now
        )
        self._out.append(PersistSend(request))

    def _on_typing(self, frame: wire.Typing, now: float, allow_refresh: bool) -> None:
        peers = self._access(frame, frame.cid, now, allow_refresh)
        if peers is None:
            return
        last = self._typing.get(frame.cid)
        # Repeats of the same state inside the interval are dropped: typing is at-most-once.
        if (
            last is not None
            and last[0] == frame.on
            and now - last[1] < self.config.typing_interval_s
        ):
            return
        self._typing[frame.cid] = (frame.on, now)
        notice = wire.TypingNotice(
            cid=frame.cid,
            user=self.user_id,
            on=frame.on,
            ttl_ms=int(self.config.typing_ttl_s * 1000),
        )
        self._out.append(TypingAction(frame.cid, peers, wire.encode(notice)))

    def _on_sync(self, frame: wire.Sync, allow_refresh: bool) -> None:
        m = self.memberships
        if m is None:
            if allow_refresh:
                self._out.append(RefreshAction(frame))
            else:
                self._error(Err.DB_UNAVAILABLE, frame.rid)
            return
        if frame.all:
            positions = {cid: frame.convs.get(cid, 0) for cid in m.peers}
        else:
            positions = {cid: seq for cid, seq in frame.convs.items() if cid in m.peers}
        gone = tuple(sorted(cid for cid in frame.convs if cid not in m.peers))
        self._out.append(SyncAction(positions, self.config.sync_page_size, frame.rid, gone))

    def _access(
        self, frame: wire.ClientFrame, cid: int, now: float, allow_refresh: bool
    ) -> tuple[int, ...] | None:
        """The other members of ``cid`` if this user may reach them, else answer and None."""
        m = self.memberships
        stale = m is None or now - m.loaded_at >= self.config.membership_refresh_s
        if allow_refresh and stale and (m is None or cid not in m.peers):
            # A conversation made after this socket authenticated: look again, at most once
            # per membership_refresh_s, then retry this very frame.
            self._out.append(RefreshAction(frame))
            return None
        if m is None:
            self._error(Err.DB_UNAVAILABLE, frame.rid)
            return None
        peers = m.peers.get(cid)
        if peers is None:
            self._error(Err.NOT_MEMBER, frame.rid)
            return None
        if any(peer in m.blocked for peer in peers):
            self._error(Err.BLOCKED, frame.rid)
            return None
        return peers

    # -- results of actions ------------------------------------------------------------------

    def auth_succeeded(
        self,
        *,
        user_id: int,
        expires_at: float,
        memberships: Memberships | None,
        rid: str | None,
        now: float,
        token_version: int = 0,
    ) -> None:
        if self.state is State.CLOSED:
            return
        if self.state is State.OPEN and user_id != self.user_id:
            self.close(Close.BAD_TOKEN, "token for another user")
            return
        if now >= expires_at:
            self.close(Close.TOKEN_EXPIRED, "token expired")
            return
        self.state, self.user_id, self.token_version = State.OPEN, user_id, token_version
        self.expires_at, self.reauth_sent = expires_at, False
        if memberships is not None:
            self.memberships = memberships
        c = self.config
        limits = wire.Limits(
            max_frame_bytes=c.max_frame_bytes,
            max_body_chars=c.max_body_chars,
            rate_per_s=c.rate_per_s,
            rate_burst=c.rate_burst,
            sync_page_size=c.sync_page_size,
            typing_ttl_ms=int(c.typing_ttl_s * 1000),
        )
        ready = wire.Ready(
            user=user_id,
            session=self.session,
            node=c.node_id,
            time=ms(now),
            expires_at=ms(expires_at),
            heartbeat_s=c.heartbeat_s,
            limits=limits,
            rid=rid,
        )
        self._send(ready)

    def auth_failed(self, code: int, reason: str = "") -> None:
        self.close(code, reason)

    def set_memberships(self, memberships: Memberships) -> None:
        """Replace the cache (after an unblock or an outage the safety events consumer reads
        PostgreSQL again)."""
        self.memberships = memberships

    # -- safety events (the socket-state seam, realtime/sockets.py) --------------------------

    def conversation_closed(self, cid: int) -> None:
        """An unmatch ended ``cid``: later frames naming it answer ``not_member``."""
        if self.memberships is not None:
            self.memberships.peers.pop(cid, None)

    def peer_blocked(self, peer: int) -> tuple[int, ...]:
        """A block between this user and ``peer`` (either way): frames to ``peer`` answer
        ``blocked`` and the conversations with ``peer`` leave the cache (the API's block ends
        the match; its unmatch event follows, this does not wait for it). Returns their ids."""
        m = self.memberships
        if m is None:
            return ()
        m.blocked = m.blocked | {peer}
        ended = tuple(cid for cid, peers in m.peers.items() if peer in peers)
        for cid in ended:
            del m.peers[cid]
        return ended

    def conversation_opened(self, cid: int, peer: int) -> None:
        """A match opened ``cid`` with ``peer``: sends to it go through without a reload, unless
        ``peer`` is blocked."""
        m = self.memberships
        if m is not None and peer not in m.blocked:
            m.peers[cid] = (peer,)

    def token_revoked(self, code: int, reason: str, *, below: int | None = None) -> CloseOut | None:
        """A ban (``below`` None) or a token-version bump to ``below``: the close to perform, or
        None when this socket's token is not older than the bump (or it is closed already)."""
        if below is not None and self.token_version >= below:
            return None
        return self._closing(code, reason)

    def memberships_loaded(
        self, memberships: Memberships | None, retry: wire.ClientFrame, now: float
    ) -> None:
        """After a :class:`RefreshAction`: ``None`` means the database could not be read."""
        if self.state is not State.OPEN:
            return
        if memberships is None:
            self._error(Err.DB_UNAVAILABLE, retry.rid)
            return
        self.memberships = memberships
        self._dispatch(retry, now, allow_refresh=False)

    def send_finished(self, outcome: SendOutcome) -> None:
        self.inflight = max(0, self.inflight - 1)
        if self.state is not State.OPEN:
            return
        request, stored = outcome.request, outcome.stored
        if stored is None:
            self._error(outcome.error or Err.INTERNAL, request.rid)
            return
        ack = wire.Ack(
            cmid=request.cmid,
            id=stored.id,
            cid=request.cid,
            seq=stored.seq,
            time=stored.time_ms,
            dup=stored.dup,
            rid=request.rid,
        )
        self._send(ack)

    def read_finished(self, outcome: ReadOutcome) -> None:
        if self.state is State.OPEN and outcome.error is not None:
            self._error(outcome.error, outcome.request.rid)

    def sync_finished(
        self, messages: list[StoredMessage], *, end: bool, rid: str | None, gone: tuple[int, ...]
    ) -> None:
        if self.state is not State.OPEN:
            return
        page = wire.SyncPage(
            msgs=[message_frame(m) for m in messages], end=end, gone=list(gone), rid=rid
        )
        self._send(page)

    def sync_failed(self, code: Err, rid: str | None) -> None:
        if self.state is State.OPEN:
            self._error(code, rid)

    def presence_answered(self, data: bytes) -> None:
        """After a :class:`PresenceAction`: ``data`` is the encoded ``presence`` answer."""
        if self.state is State.OPEN:
            TALLY.frames_out["presence"] += 1
            self._out.append(Out(data))

    def presence_failed(self, rid: str | None) -> None:
        if self.state is State.OPEN:
            self._error(Err.UNAVAILABLE, rid)

    # -- helpers -----------------------------------------------------------------------------

    def _send(self, frame: wire.ServerFrame) -> None:
        TALLY.out(frame)
        self._out.append(Out(wire.encode(frame)))

    def _error(self, code: Err, rid: str | None, message: str = "") -> None:
        TALLY.error(code)
        self._out.append(Out(error_frame(code, rid, message)))


def message_frame(m: StoredMessage) -> wire.Msg:
    """The ``msg`` frame of a stored message; a deleted one keeps its place, body ``None``
    (the REST history's ``null``)."""
    return wire.Msg(
        cid=m.cid,
        seq=m.seq,
        id=m.id,
        sender=m.sender,
        cmid=m.cmid,
        body=None if m.deleted else m.body,
        kind=m.kind,
        time=m.time_ms,
        deleted=m.deleted,
    )
