"""Outgoing mail: the :class:`Mailer` interface, an outbox folder for development, SMTP for real.

In development and test every message is one JSON file in ``<data_dir>/outbox`` (what a
developer or a test reads the codes from). In production it goes out by SMTP (stdlib
``smtplib``, run in a thread). Routes never await a send: they hand the message to
:func:`send_in_background`, which FastAPI runs after the response. A send that fails is logged
(recipient domain only, never the code) and not retried: the user can ask again. Production
without ``MM_SMTP_HOST`` cannot make a mailer; that is logged on every send, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import smtplib
import ssl
import time
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from fastapi import BackgroundTasks

from common.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    body: str
    #: What the mail is for (``verify_email``, ``reset_password``), for the outbox and logs.
    kind: str


class Mailer(Protocol):
    async def send(self, mail: Mail) -> None: ...


class OutboxMailer:
    """Writes each mail as ``<ns-time>-<random>.json`` in a folder (development and test)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _write(self, mail: Mail) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{secrets.token_hex(4)}.json"
        tmp = self.folder / f".{name}.tmp"
        tmp.write_text(json.dumps(asdict(mail)))
        os.replace(tmp, self.folder / name)  # readers never see a half-written file

    async def send(self, mail: Mail) -> None:
        await asyncio.to_thread(self._write, mail)


class SmtpMailer:
    """Speaks SMTP with the stdlib in a worker thread (STARTTLS unless disabled)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise RuntimeError("MM_SMTP_HOST must be set to send mail in production")
        self.settings = settings

    def _send(self, mail: Mail) -> None:
        s = self.settings
        assert s.smtp_host is not None
        message = EmailMessage()
        message["From"] = s.mail_from
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message.set_content(mail.body)
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s) as smtp:
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_user and s.smtp_password:
                smtp.login(s.smtp_user, s.smtp_password)
            smtp.send_message(message)

    async def send(self, mail: Mail) -> None:
        await asyncio.to_thread(self._send, mail)


def outbox_dir(settings: Settings) -> Path:
    return settings.data_dir / "outbox"


def make_mailer(settings: Settings) -> Mailer:
    """Outbox in development and test; SMTP in production (refused if not configured)."""
    if settings.is_development and not settings.smtp_host:
        return OutboxMailer(outbox_dir(settings))
    return SmtpMailer(settings)


_mailers: dict[int, Mailer] = {}


def mailer_for(settings: Settings) -> Mailer:
    mailer = _mailers.get(id(settings))
    if mailer is None:
        mailer = _mailers[id(settings)] = make_mailer(settings)
    return mailer


async def _deliver(settings: Settings, mail: Mail) -> None:
    try:
        await mailer_for(settings).send(mail)
    except Exception as exc:  # a failed send must never surface in a finished request
        domain = mail.to.rpartition("@")[2]
        log.error("mail %s to @%s failed: %s", mail.kind, domain, type(exc).__name__)


def send_in_background(tasks: BackgroundTasks, settings: Settings, mail: Mail) -> None:
    """Queue ``mail`` to go out after the response has been sent."""
    tasks.add_task(_deliver, settings, mail)
