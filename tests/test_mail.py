"""Mail: .eml files in the outbox without SMTP; a real SMTP conversation with a host set."""

from __future__ import annotations

import email
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zerospeech_api.mail import Mailer, outbox_dir
from zerospeech_api.settings import Settings


def test_without_smtp_host_messages_land_in_the_outbox(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    mailer = Mailer(settings)
    mailer.send(
        to="ada@example.org", subject="Verify your account", body="link: http://x/y"
    ).result(10)
    mailer.close()
    files = sorted(outbox_dir(settings).glob("*.eml"))
    assert len(files) == 1
    message = email.message_from_bytes(files[0].read_bytes())
    assert message["To"] == "ada@example.org"
    assert message["Subject"] == "Verify your account"
    assert "http://x/y" in message.get_payload()
    assert not list(outbox_dir(settings).glob("*.tmp"))


class _SmtpSink:
    """A minimal SMTP server on a real loopback socket that records one message's DATA."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.data = b""
        self.commands: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn, conn.makefile("rb") as reader:
            conn.sendall(b"220 sink ready\r\n")
            while line := reader.readline():
                command = line.decode().strip()
                self.commands.append(command.split(" ")[0].upper())
                if command.upper().startswith("DATA"):
                    conn.sendall(b"354 go ahead\r\n")
                    while (chunk := reader.readline()) != b".\r\n":
                        self.data += chunk
                    conn.sendall(b"250 queued\r\n")
                elif command.upper().startswith("QUIT"):
                    conn.sendall(b"221 bye\r\n")
                    return
                elif command.upper().startswith("EHLO"):
                    conn.sendall(b"250-sink\r\n250 8BITMIME\r\n")
                else:
                    conn.sendall(b"250 ok\r\n")


@pytest.fixture
def smtp_sink() -> Iterator[_SmtpSink]:
    sink = _SmtpSink()
    yield sink
    sink.sock.close()


def test_with_smtp_host_messages_are_sent(
    make_settings: Callable[..., Settings], smtp_sink: _SmtpSink, tmp_path: Path
) -> None:
    settings = make_settings(smtp_host="127.0.0.1", smtp_port=smtp_sink.port, smtp_tls="none")
    mailer = Mailer(settings)
    mailer.send(to="bob@example.org", subject="Reset", body="reset link").result(10)
    mailer.close()
    smtp_sink.thread.join(10)
    assert {"EHLO", "MAIL", "RCPT", "DATA"} <= set(smtp_sink.commands)
    assert b"Subject: Reset" in smtp_sink.data
    assert not outbox_dir(settings).exists()


def test_a_failing_smtp_server_does_not_raise(make_settings: Callable[..., Settings]) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    settings = make_settings(smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none")
    mailer = Mailer(settings)
    assert mailer.send(to="c@example.org", subject="s", body="b").result(30) is None
    mailer.close()


def test_mail_queued_on_a_session_goes_out_only_if_it_commits(
    make_settings: Callable[..., Settings], db
) -> None:
    settings = make_settings(database_url=db.url)
    mailer = Mailer(settings)
    with db.session() as session:
        mailer.send_on_commit(session, to="a@example.org", subject="kept", body="x")
        session.rollback()
        mailer.send_on_commit(session, to="b@example.org", subject="sent", body="y")
        assert not outbox_dir(settings).exists()  # nothing before the commit
        session.commit()
    mailer.close()
    subjects = [
        email.message_from_bytes(p.read_bytes())["Subject"]
        for p in outbox_dir(settings).glob("*.eml")
    ]
    assert subjects == ["sent"]


def test_links_stay_readable_in_eml_files(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    mailer = Mailer(settings)
    link = "http://testserver/page/verify?token=" + "A" * 80
    mailer.send(to="a@example.org", subject="s", body=f"Open {link} to verify.").result(10)
    mailer.close()
    (eml,) = outbox_dir(settings).glob("*.eml")
    assert link in eml.read_text()
