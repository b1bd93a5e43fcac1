"""Outgoing mail: SMTP in a background thread, or `.eml` files in <data>/outbox when no host."""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import ssl
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from zerospeech_api.files import write_atomically
from zerospeech_api.settings import Settings

log = logging.getLogger("zerospeech_api.mail")

_PENDING = "zr_pending_mail"


def outbox_dir(settings: Settings) -> Path:
    return settings.data_dir / "outbox"


class Mailer:
    """Sends without blocking the caller; failures are logged, never raised into requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mail")

    def compose(self, *, to: str, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.mail_from
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain="zerospeech-api")
        # 8bit keeps links readable in .eml files (quoted-printable would fold them with `=`).
        message.set_content(body, cte="8bit")
        return message

    def send(self, *, to: str, subject: str, body: str) -> Future[None]:
        """Queue a message; returns a future the caller may ignore (tests wait on it)."""
        message = self.compose(to=to, subject=subject, body=body)
        return self._pool.submit(self._deliver, message)

    def send_later(self, compose: Callable[[], EmailMessage | None]) -> Future[None]:
        """Run `compose` on the mail thread and send the message it returns, if any: the
        caller's answer takes the same time whatever `compose` finds (an account or none)."""
        return self._pool.submit(self._compose_and_deliver, compose)

    def _compose_and_deliver(self, compose: Callable[[], EmailMessage | None]) -> None:
        try:
            message = compose()
        except Exception:  # logged, never raised: nobody waits for this answer
            log.exception("composing a mail failed")
            return
        if message is not None:
            self._deliver(message)

    def send_on_commit(self, session: Session, *, to: str, subject: str, body: str) -> None:
        """Queue a message that goes out only if `session` commits (dropped on rollback), so
        nobody is mailed a link to something that was never saved."""
        if not session.in_transaction():
            session.begin()  # bind the message to a transaction (no connection is taken yet)
        pending: list[EmailMessage] | None = session.info.get(_PENDING)
        if pending is None:
            pending = session.info[_PENDING] = []
            event.listen(session, "after_commit", self._send_pending)
            event.listen(session, "after_soft_rollback", self._drop_pending)
        pending.append(self.compose(to=to, subject=subject, body=body))

    def _send_pending(self, session: Session) -> None:
        pending = session.info.get(_PENDING) or []
        while pending:
            self._pool.submit(self._deliver, pending.pop(0))

    @staticmethod
    def _drop_pending(session: Session, previous_transaction: SessionTransaction) -> None:
        # Any rollback of the outer transaction, even before SQL ran; not a savepoint's.
        if not previous_transaction.nested:
            (session.info.get(_PENDING) or []).clear()

    def _deliver(self, message: EmailMessage) -> None:
        try:
            if self.settings.smtp_host:
                self._send_smtp(message)
                log.info("mail sent to %s: %s", message["To"], message["Subject"])
            else:
                path = self._write_eml(message)
                log.info("mail written to %s", path)
        except Exception as exc:  # a mail failure must not take a request or worker down
            log.error("mail to %s failed: %s", message["To"], type(exc).__name__)

    def _send_smtp(self, message: EmailMessage) -> None:
        s = self.settings
        context = ssl.create_default_context()
        if s.smtp_tls == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                s.smtp_host, s.smtp_port, context=context, timeout=30
            )
        else:
            client = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=30)
        with client:
            if s.smtp_tls == "starttls":
                client.starttls(context=context)
            if s.smtp_user:
                client.login(s.smtp_user, s.smtp_password.get_secret_value())
            client.send_message(message)

    def _write_eml(self, message: EmailMessage) -> Path:
        folder = outbox_dir(self.settings)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        final = folder / f"{stamp}-{uuid.uuid4().hex[:12]}.eml"
        write_atomically(final, bytes(message))  # a reader never sees half a message
        return final

    def close(self) -> None:
        self._pool.shutdown(wait=True)
