"""The mail backends: SMTP against a tiny real SMTP server on loopback, and the outbox folder.

Also checks that the API's OpenAPI document (``/docs``) builds with every route of issue 5.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.services.mail import Mail, OutboxMailer, SmtpMailer, make_mailer
from common.settings import Settings
from tests.support import TICK


class SmtpSink:
    """Just enough of RFC 5321 for smtplib: records each message's envelope and data."""

    def __init__(self) -> None:
        self.messages: list[dict[str, object]] = []
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(line: str) -> None:
            writer.write(f"{line}\r\n".encode())
            await writer.drain()

        envelope: dict[str, object] = {"rcpt": []}
        await reply("220 sink ready")
        for _ in range(100):  # bounded: a session here is a handful of commands
            line = (await asyncio.wait_for(reader.readline(), 100 * TICK)).decode().strip()
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                await reply("250 sink")
            elif verb == "MAIL":
                envelope["from"] = line
                await reply("250 ok")
            elif verb == "RCPT":
                envelope["rcpt"].append(line)  # type: ignore[attr-defined]
                await reply("250 ok")
            elif verb == "DATA":
                await reply("354 go on")
                data = await asyncio.wait_for(reader.readuntil(b"\r\n.\r\n"), 100 * TICK)
                envelope["data"] = data.decode()
                self.messages.append(envelope)
                envelope = {"rcpt": []}
                await reply("250 queued")
            elif verb == "QUIT":
                await reply("221 bye")
                break
            else:
                await reply("502 not implemented")
        writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def smtp_sink() -> AsyncIterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    async with sink as port:
        yield sink, port


async def test_smtp_mailer_delivers_through_a_real_smtp_session(
    smtp_sink: tuple[SmtpSink, int],
) -> None:
    sink, port = smtp_sink
    settings = Settings(
        env="production",
        secret_key="x" * 40,
        jwt_keys_dir=Path("/nonexistent"),
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_starttls=False,
        mail_from="MergeMeet <no-reply@mergemeet.dev>",
    )
    mailer = make_mailer(settings)
    assert isinstance(mailer, SmtpMailer)
    await mailer.send(Mail(to="someone@example.com", subject="Hi", body="Code 123456", kind="t"))
    assert len(sink.messages) == 1
    message = sink.messages[0]
    assert "someone@example.com" in str(message["rcpt"])
    assert "Subject: Hi" in str(message["data"]) and "Code 123456" in str(message["data"])


def test_production_without_smtp_refuses_to_make_a_mailer() -> None:
    settings = Settings(env="production", secret_key="x" * 40, jwt_keys_dir=Path("/nonexistent"))
    with pytest.raises(RuntimeError, match="MM_SMTP_HOST"):
        make_mailer(settings)


async def test_outbox_mailer_writes_one_json_file_per_mail(tmp_path: Path) -> None:
    mailer = OutboxMailer(tmp_path / "outbox")
    await mailer.send(Mail(to="a@example.com", subject="S", body="B", kind="verify_email"))
    files = list((tmp_path / "outbox").glob("*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text()) == {
        "to": "a@example.com",
        "subject": "S",
        "body": "B",
        "kind": "verify_email",
    }


async def test_openapi_lists_the_account_and_profile_routes(api: httpx.AsyncClient) -> None:
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/me",
        "/api/profiles/me",
        "/api/profiles/me/location",
        "/api/profiles/{user_id}",
        "/api/interests",
        "/api/photos",
        "/api/photos/order",
        "/api/media/{key}",
    ):
        assert path in paths, path
    upload = paths["/api/photos"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    assert (await api.get("/docs")).status_code == 200
