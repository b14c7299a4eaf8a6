"""Protocol adapters: how the load generator speaks to each chat server it compares.

Owns the per-protocol bits only: the URL path, how a send frame is encoded, and how a server
frame is classified (ack, delivered message, error, ready). Two implementations: MergeMeet
(``common/wire.py`` frames, ``ready`` after auth, ``ack`` after commit) and the conventional
FastAPI baseline (:mod:`loadtest.baseline_fastapi`, whose wire format is in its docstring).
Adapters are pure: no sockets, no clock, no state; the generator owns all of that.
"""

from __future__ import annotations

from typing import Final, Protocol

import msgspec

from common import wire

# Classification of a server frame (ints: compared per frame on the hot path).
OTHER: Final = 0
ACK: Final = 1
MSG: Final = 2
ERROR: Final = 3
READY: Final = 4

#: ``(kind, cmid, code, seq)``: ``cmid`` for ACK/MSG (and ERROR when known), ``code`` for
#: ERROR, ``seq`` for ACK (the place the server says the message took).
Event = tuple[int, str, str, int]


class Adapter(Protocol):
    name: str
    path: str
    #: True when the server answers authentication with a frame (else the upgrade is enough).
    has_ready: bool

    def encode_send(self, cid: int, cmid: str, body: str) -> bytes: ...

    def classify(self, data: bytes) -> Event: ...


class MergeMeet:
    """The realtime node: ``send`` with ``rid`` = ``cmid`` so a refusal names its message."""

    name = "mergemeet"
    path = "/"
    has_ready = True

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoder = wire.server_decoder

    def encode_send(self, cid: int, cmid: str, body: str) -> bytes:
        return self._encoder.encode(wire.Send(cid=cid, cmid=cmid, body=body, rid=cmid))

    def classify(self, data: bytes) -> Event:
        try:
            frame = self._decoder.decode(data)
        except msgspec.MsgspecError:
            return (ERROR, "", "undecodable", 0)
        match frame:
            case wire.Ack():
                return (ACK, frame.cmid, "", frame.seq)
            case wire.Msg():
                return (MSG, frame.cmid, "", 0)
            case wire.Error():
                return (ERROR, frame.rid or "", frame.code, 0)
            case wire.Ready():
                return (READY, "", "", 0)
        return (OTHER, "", "", 0)


class _BaselineFrame(msgspec.Struct):
    type: str
    cmid: str = ""
    seq: int = 0


class Baseline:
    """:mod:`loadtest.baseline_fastapi`: no ``ready`` (the upgrade is the authentication)."""

    name = "baseline"
    path = "/ws"
    has_ready = False

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(_BaselineFrame)

    def encode_send(self, cid: int, cmid: str, body: str) -> bytes:
        return self._encoder.encode({"cid": cid, "cmid": cmid, "body": body})

    def classify(self, data: bytes) -> Event:
        try:
            frame = self._decoder.decode(data)
        except msgspec.MsgspecError:
            return (ERROR, "", "undecodable", 0)
        if frame.type == "ack":
            return (ACK, frame.cmid, "", frame.seq)
        if frame.type == "msg":
            return (MSG, frame.cmid, "", 0)
        if frame.type == "error":
            return (ERROR, frame.cmid, "refused", 0)
        return (OTHER, "", "", 0)


ADAPTERS: Final[dict[str, type[MergeMeet] | type[Baseline]]] = {
    "mergemeet": MergeMeet,
    "baseline": Baseline,
}


def make_adapter(name: str) -> Adapter:
    return ADAPTERS[name]()
