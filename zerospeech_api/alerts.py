"""Alerts to the operators: mail to ZR_OPERATOR_EMAIL and/or a JSON POST to ZR_ALERT_WEBHOOK_URL.

Once per problem: the `alerts` table keeps each problem's state under its stable key. A problem
is sent when first seen (or seen again after it cleared) and once more, as resolved, when it
clears; a one-off event (a platform failure) is stored resolved at once. The database decides
who sends: an inserted row, or a conditional update that changed one row, so two processes
never send the same alert. Delivery runs on a thread of its own with a short timeout, so a slow
webhook never holds up an evaluation. The webhook URL carries a secret token: it is never
logged (only the HTTP status or the error's type is) and `check` shows it masked.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zerospeech_api.db.engine import Database, rows_changed
from zerospeech_api.db.tables import Alert, utcnow
from zerospeech_api.mail import Mailer
from zerospeech_api.settings import Settings

log = logging.getLogger("zerospeech_api.alerts")

WEBHOOK_TIMEOUT_SECONDS = 5.0
# Resolved alerts are forgotten after this long (the watchdog prunes them).
KEEP_RESOLVED = dt.timedelta(days=30)


class Reported(Protocol):
    """What an alert is about (health.Problem is one)."""

    @property
    def key(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def command(self) -> str: ...


@dataclass(frozen=True)
class Item:
    """A plain alert subject: a one-off event, or an alert read back from the table."""

    key: str
    kind: str
    reason: str
    command: str = ""


@dataclass(frozen=True)
class Notice:
    """One message to the operators: a one-line subject and the full text."""

    subject: str
    text: str


def problem_notice(settings: Settings, item: Reported) -> Notice:
    """The message for a problem seen for the first time."""
    return Notice(
        subject=f"[{settings.app_name}] {item.kind}: {_first_line(item.reason)}",
        text=f"{settings.app_name} ({settings.base_url}): {item.reason}\n"
        f"Fix: {item.command}\n"
        f"(sent once for problem {item.key}; another message follows when it clears)",
    )


def resolved_notice(settings: Settings, item: Reported) -> Notice:
    """The message for a problem that cleared."""
    return Notice(
        subject=f"[{settings.app_name}] resolved: {_first_line(item.reason)}",
        text=f"{settings.app_name} ({settings.base_url}): resolved ({item.key}): {item.reason}",
    )


def _first_line(text: str, width: int = 100) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def slack_text(text: str) -> str:
    """Escape the three characters Slack reads as markup (Mattermost shows them as text)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def post_webhook(url: str, text: str, *, timeout: float = WEBHOOK_TIMEOUT_SECONDS) -> int:
    """POST `{"text": text}` as JSON (Slack's and Mattermost's incoming-webhook format);
    returns the HTTP status. Raises on a refused connection, a timeout or an error status."""
    body = json.dumps({"text": slack_text(text)}).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status)


class Alerter:
    """Sends notices to the configured channels in the background; never raises."""

    def __init__(
        self,
        settings: Settings,
        mailer: Mailer,
        *,
        webhook_timeout: float = WEBHOOK_TIMEOUT_SECONDS,
    ) -> None:
        self.settings = settings
        self.mailer = mailer
        self.webhook_timeout = webhook_timeout
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts")

    @property
    def channels(self) -> list[str]:
        """`mail` and/or `webhook`, as configured."""
        s = self.settings
        return [
            *(["mail"] if s.operator_addresses else []),
            *(["webhook"] if s.alert_webhook_url.get_secret_value() else []),
        ]

    def send(self, notice: Notice) -> Future[None]:
        """Queue a notice; the future is done once it was handed to every channel."""
        return self._pool.submit(self._deliver, notice)

    def event(self, *, db: Database, item: Reported, notice: Notice) -> Future[bool]:
        """Record a one-off event and send `notice` if it is new, all on the alert thread (the
        caller never waits for the database or a channel); the future says if it was sent."""
        return self._pool.submit(self._event, db, item, notice)

    def _event(self, db: Database, item: Reported, notice: Notice) -> bool:
        try:
            if not record_event(db=db, item=item):
                return False
        except Exception as exc:  # the alert is lost, the evaluation is not
            log.error("alert %s not recorded: %s", item.key, type(exc).__name__)
            return False
        log.warning("ALERT %s: %s", item.key, item.reason)
        self._deliver(notice)
        return True

    def _deliver(self, notice: Notice) -> None:
        s = self.settings
        if s.operator_addresses:
            self.mailer.send(
                to=", ".join(s.operator_addresses), subject=notice.subject, body=notice.text + "\n"
            )
        url = s.alert_webhook_url.get_secret_value()
        if url:
            try:
                post_webhook(url, notice.text, timeout=self.webhook_timeout)
            except urllib.error.HTTPError as exc:
                log.error("alert webhook answered HTTP %s: %s", exc.code, notice.subject)
            except Exception as exc:  # never the URL: it holds the webhook's token
                log.error("alert webhook failed (%s): %s", type(exc).__name__, notice.subject)

    def close(self) -> None:
        """Deliver what is queued (bounded by the webhook timeout), then stop."""
        self._pool.shutdown(wait=True)


@dataclass
class Changes:
    """What a reconciliation decided to send."""

    opened: list[Reported] = field(default_factory=list)
    resolved: list[Item] = field(default_factory=list)


def _insert(session: Session, row: Alert) -> bool:
    """Add the row unless its key exists (even when another process adds it right now)."""
    if session.get(Alert, row.key) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


def record_event(*, db: Database, item: Reported) -> bool:
    """Store a one-off alert (resolved at once); True if it is new, so it must be sent."""
    now = utcnow()
    with db.transaction() as session:
        return _insert(
            session,
            Alert(
                key=item.key,
                kind=item.kind,
                message=item.reason,
                command=item.command,
                first_seen_at=now,
                last_seen_at=now,
                resolved_at=now,
            ),
        )


def open_alerts(*, session: Session) -> list[Alert]:
    """Problems the operators were told about and that have not cleared, oldest first."""
    return list(
        session.scalars(
            select(Alert).where(Alert.resolved_at.is_(None)).order_by(Alert.first_seen_at)
        )
    )


def reconcile(*, db: Database, alertable: Sequence[Reported], present: set[str]) -> Changes:
    """Open an alert for each new problem in `alertable`; resolve the open ones whose key is
    not in `present` (problems still there but not alertable, such as a join under way, stay
    open). Takes no write lock when there is nothing to change."""
    with db.session(read_only=True) as session:
        already = {row.key for row in open_alerts(session=session)}
    if not alertable and not already:
        return Changes()
    changes = Changes()
    now = utcnow()
    with db.transaction() as session:
        open_rows = {row.key: row for row in open_alerts(session=session)}
        for item in alertable:
            if item.key in open_rows:
                open_rows[item.key].last_seen_at = now
            elif _open(session, item, now):
                changes.opened.append(item)
        for key, row in open_rows.items():
            if key in present:
                continue
            closed = rows_changed(
                session,
                update(Alert)
                .where(Alert.key == key, Alert.resolved_at.is_(None))
                .values(resolved_at=now)
                .execution_options(synchronize_session=False),
            )
            if closed == 1:
                changes.resolved.append(Item(row.key, row.kind, row.message, row.command))
    return changes


def _open(session: Session, item: Reported, now: dt.datetime) -> bool:
    """Insert the alert, or reopen a resolved one with that key; True if this call did."""
    values = {
        "kind": item.kind,
        "message": item.reason,
        "command": item.command,
        "first_seen_at": now,
        "last_seen_at": now,
    }
    if session.get(Alert, item.key) is None:
        return _insert(session, Alert(key=item.key, resolved_at=None, **values))
    reopened = rows_changed(
        session,
        update(Alert)
        .where(Alert.key == item.key, Alert.resolved_at.is_not(None))
        .values(resolved_at=None, **values)
        .execution_options(synchronize_session=False),
    )
    return reopened == 1
