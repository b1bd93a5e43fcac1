"""Alert channels and state: the webhook's JSON, its secret kept out of logs and `check`, a
slow or failing webhook never blocks or raises, and the database decides what is new."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.helpers.processes import free_port
from tests.helpers.webhook import WebhookReceiver, webhook_receiver
from zerospeech_api.alerts import Alerter, Item, Notice, post_webhook, reconcile, record_event
from zerospeech_api.db.engine import Database
from zerospeech_api.mail import Mailer
from zerospeech_api.settings import Settings, SettingsError, load_settings


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


def test_the_webhook_gets_slack_and_mattermost_json(hook: WebhookReceiver) -> None:
    assert post_webhook(hook.url, "disk full on <gpu-1> & `kill 42`") == 200
    [delivery] = hook.deliveries
    assert delivery.path == f"/hooks/{hook.token}"
    assert delivery.content_type == "application/json"
    assert delivery.body == {"text": "disk full on &lt;gpu-1&gt; &amp; `kill 42`"}


def alerter_for(make_settings: Callable[..., Settings], url: str, **kw: object) -> Alerter:
    settings = make_settings(alert_webhook_url=url)
    return Alerter(settings, Mailer(settings), **kw)  # type: ignore[arg-type]


def test_a_failing_webhook_is_logged_without_its_url(
    make_settings: Callable[..., Settings], hook: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    hook.status = 500
    unreachable = f"http://127.0.0.1:{free_port()}/hooks/{hook.token}"
    caplog.set_level(logging.INFO)
    for url in (hook.url, unreachable):
        alerter = alerter_for(make_settings, url)
        alerter.send(Notice(subject="stuck", text="a problem")).result(timeout=30)
        alerter.close()
        alerter.mailer.close()
    messages = [record.getMessage() for record in caplog.records]
    assert any("alert webhook answered HTTP 500: stuck" in m for m in messages)
    assert any("alert webhook failed (URLError): stuck" in m for m in messages)
    assert not [m for m in messages if hook.token in m]
    assert len(hook.deliveries) == 1


def test_a_webhook_that_never_answers_is_given_up(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        alerter = alerter_for(make_settings, f"http://127.0.0.1:{port}/hook", webhook_timeout=0.5)
        # Done (not hanging): the caller's thread never waited, the alert thread gave up.
        alerter.send(Notice(subject="slow", text="x")).result(timeout=30)
        alerter.close()
        alerter.mailer.close()
    finally:
        for connection in accepted:
            connection.close()
        listener.close()
    assert any("(TimeoutError): slow" in r.getMessage() for r in caplog.records)


def test_the_webhook_url_is_masked_and_checked(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("ZR_ALERT_WEBHOOK_URL", raising=False)
    secret = "https://hooks.example.org/services/T000/B000/very-secret-token"
    env = tmp_path / ".env"
    env.write_text(
        f"ZR_ALERT_WEBHOOK_URL={secret}\nZR_OPERATOR_EMAIL=a@example.org, b@example.org\n"
    )
    settings = load_settings(env)
    assert settings.public_items()["alert_webhook_url"] == "********"
    assert "very-secret-token" not in repr(settings)
    assert settings.operator_addresses == ["a@example.org", "b@example.org"]
    env.write_text("ZR_ALERT_WEBHOOK_URL=ftp://hooks.example.org/very-secret-token\n")
    with pytest.raises(SettingsError, match="ZR_ALERT_WEBHOOK_URL") as refused:
        load_settings(env)
    assert "very-secret-token" not in str(refused.value)
    env.write_text("ZR_OPERATOR_EMAIL=ops@example.org, not an address\n")
    with pytest.raises(SettingsError, match="ZR_OPERATOR_EMAIL"):
        load_settings(env)


def test_without_channels_nothing_is_sent(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    assert Alerter(settings, Mailer(settings)).channels == []
    both = make_settings(alert_webhook_url="https://x.example.org/h", operator_email="o@x.org")
    assert Alerter(both, Mailer(both)).channels == ["mail", "webhook"]


def test_the_database_decides_what_is_new(settings: Settings, db: Database) -> None:
    event = Item(key="platform-failure:s1:1-1", kind="platform-failure", reason="boom")
    assert record_event(db=db, item=event)
    assert not record_event(db=db, item=event)

    stuck = Item(key="no-worker", kind="no-worker", reason="nobody", command="start one")
    # Two processes reconciling the same problem at once: only one of them opens it.
    databases = [Database(settings.database) for _ in range(3)]
    opened: list[int] = []
    barrier = threading.Barrier(len(databases))

    def race(database: Database) -> None:
        barrier.wait()
        changes = reconcile(db=database, alertable=[stuck], present={stuck.key})
        opened.append(len(changes.opened))

    threads = [threading.Thread(target=race, args=(d,)) for d in databases]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for database in databases:
            database.dispose()
    assert sorted(opened) == [0, 0, 1]
    assert reconcile(db=db, alertable=[stuck], present={stuck.key}).opened == []
    gone = reconcile(db=db, alertable=[], present=set())
    assert [(i.key, i.reason, i.command) for i in gone.resolved] == [
        ("no-worker", "nobody", "start one")
    ]
    assert reconcile(db=db, alertable=[], present=set()).resolved == []  # once
    assert [i.key for i in reconcile(db=db, alertable=[stuck], present={stuck.key}).opened] == [
        "no-worker"
    ]
