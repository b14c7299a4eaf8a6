"""The benchmark baseline: the conventional FastAPI chat, faithful and minimal.

What most FastAPI chat tutorials and apps do: a WebSocket endpoint under uvicorn, an in-process
dict of connections, one SQLAlchemy transaction per message (lock the conversation, number the
message, insert, commit), then an ack to the sender and a send to each connected partner. It
uses the same database, schema and tokens as MergeMeet so both are measured doing the same
durable work (ack after commit, gapless ``seq``, ``(sender, cmid)`` unique).

Wire format (JSON text frames), the smallest that lets the same load generator drive it:
client → ``{"cid", "cmid", "body"}``; server → ``{"type": "ack", "cmid", "cid", "seq"}`` and
``{"type": "msg", "cid", "seq", "from", "cmid", "body"}``. Token in the ``Authorization`` header.

Run: ``python -m loadtest.baseline_fastapi --port 8766`` (never part of the product).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from common.db import make_engine, make_sessionmaker
from common.models import Conversation, ConversationMember, Message, top_seq
from common.settings import get_settings
from common.tokens import TokenError, keyset_from_settings, verify_token

settings = get_settings()
engine = make_engine(settings)
sessions = make_sessionmaker(engine)
keys = keyset_from_settings(settings, with_private=False)
app = FastAPI()
connections: dict[int, set[WebSocket]] = defaultdict(set)


async def _store(user_id: int, frame: dict[str, Any]) -> tuple[int, list[int]] | None:
    """One transaction per message; returns (seq, member ids) or None when not a member."""
    cid = int(frame["cid"])
    async with sessions() as session, session.begin():
        members = list(
            (
                await session.scalars(
                    select(ConversationMember.user_id).where(
                        ConversationMember.conversation_id == cid
                    )
                )
            ).all()
        )
        if user_id not in members:
            return None
        # Lock the conversation, then read its top seq in a statement of its own (top_seq).
        await session.execute(
            select(Conversation.id).where(Conversation.id == cid).with_for_update()
        )
        seq = int(await session.scalar(select(top_seq(cid))) or 0) + 1
        session.add(
            Message(
                conversation_id=cid,
                seq=seq,
                sender_id=user_id,
                cmid=str(frame["cmid"]),
                body=str(frame["body"]),
            )
        )
    return seq, members


@app.websocket("/ws")
async def chat(websocket: WebSocket) -> None:
    header = websocket.headers.get("authorization", "")
    try:
        claims = verify_token(
            header.removeprefix("Bearer "),
            keys,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )
    except TokenError:
        await websocket.close(code=4001)
        return
    user_id = claims.user_id
    await websocket.accept()
    connections[user_id].add(websocket)
    try:
        while True:
            frame = json.loads(await websocket.receive_text())
            try:
                stored = await _store(user_id, frame)
            except IntegrityError:
                await websocket.send_text(json.dumps({"type": "error", "cmid": frame["cmid"]}))
                continue
            if stored is None:
                await websocket.send_text(json.dumps({"type": "error", "cmid": frame["cmid"]}))
                continue
            seq, members = stored
            ack = {"type": "ack", "cmid": frame["cmid"], "cid": frame["cid"], "seq": seq}
            await websocket.send_text(json.dumps(ack))
            msg = {
                "type": "msg",
                "cid": frame["cid"],
                "seq": seq,
                "from": user_id,
                "cmid": frame["cmid"],
                "body": frame["body"],
            }
            for member in members:
                if member == user_id:
                    continue
                for peer in list(connections.get(member, ())):
                    await peer.send_text(json.dumps(msg))
    except WebSocketDisconnect:
        pass
    finally:
        connections[user_id].discard(websocket)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        ws="websockets",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
