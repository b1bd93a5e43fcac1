"""Read the mails the server wrote to <data>/outbox and pull the links out of them."""

from __future__ import annotations

import email
import email.policy
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from zerospeech_api.settings import Settings


@dataclass(frozen=True)
class Mail:
    path: Path
    to: str
    subject: str
    body: str

    def link(self, page: str) -> str:
        """The first link to /page/<page> in the body."""
        match = re.search(rf"https?://\S+/page/{page}\?token=\S+", self.body)
        assert match, f"no /page/{page} link in:\n{self.body}"
        return match.group(0)

    def token(self, page: str) -> str:
        return parse_qs(urlsplit(self.link(page)).query)["token"][0]


def read_mails(outbox: Path) -> list[Mail]:
    """Every complete message in the outbox, oldest first."""
    if not outbox.is_dir():
        return []
    mails = []
    # File names have one-second stamps: order by modification time for what came first.
    paths = sorted(outbox.glob("*.eml"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    for path in paths:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = message.get_body(("plain",))
        assert body is not None
        mails.append(Mail(path, str(message["To"]), str(message["Subject"]), body.get_content()))
    return mails


def wait_for_mail(
    outbox: Path, *, to: str, count: int = 1, page: str | None = None, timeout: float = 15
) -> Mail:
    """The newest mail to `to` (with a link to /page/<page>, if given), once at least `count`
    such mails have arrived (mail is sent in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        mails = [
            m
            for m in read_mails(outbox)
            if m.to.lower() == to.lower() and (page is None or f"/page/{page}?" in m.body)
        ]
        if len(mails) >= count:
            return mails[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} mail(s) to {to} not in {outbox} after {timeout}s")
        time.sleep(0.05)


def outbox_messages(settings_or_dir: Settings | Path) -> list[dict[str, str]]:
    """Mails written to <data>/outbox (read by outbox.read_mails): to, subject, decoded body,
    in file-name order."""
    folder = (
        settings_or_dir / "outbox"
        if isinstance(settings_or_dir, Path)
        else settings_or_dir.data_dir / "outbox"
    )
    return [
        {"to": mail.to, "subject": mail.subject, "body": mail.body}
        for mail in sorted(read_mails(folder), key=lambda mail: mail.path.name)
    ]
