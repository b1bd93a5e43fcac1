"""Queue health with real processes: `serve`, `worker`s and the `queue` command over one data
folder, a local webhook receiver standing in for Slack/Mattermost and the outbox for mail.

No worker: the servers' standby watchdog alerts "no worker" once (webhook and mail) and `queue`
shows why. A worker starts: it heartbeats, evaluates, and its watchdog resolves the alert. A
platform failure alerts, a participant's `invalid` does not. A worker killed with -9 goes dead
and the alert comes back. The webhook's secret never reaches a log or `check`."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.helpers.cli import cli_process
from tests.helpers.factories import (
    make_benchmark,
    make_evaluator,
    make_submission,
    make_user,
    status_of,
    zip_bytes,
)
from tests.helpers.outbox import outbox_messages
from tests.helpers.processes import wait_for
from tests.helpers.server import Server, Site
from tests.helpers.webhook import WebhookReceiver, webhook_receiver
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import WatchdogTurn
from zerospeech_api.evaluation.watchdog import TURN

pytestmark = pytest.mark.e2e

OPERATOR = "ops@example.org"
FAST = {
    "ZR_WORKER_POLL_SECONDS": "0.1",
    "ZR_JOB_LEASE_SECONDS": "5",
    "ZR_WORKER_HEARTBEAT_SECONDS": "0.5",
    "ZR_WATCHDOG_SECONDS": "0.5",
    "ZR_OPERATOR_EMAIL": OPERATOR,
}
# Waits for a gate file next to it (named after the submission), then fails or succeeds as the
# archive's mode.txt says: 4 is the platform's fault (failed), 65 the participant's (invalid).
EVALUATOR = """
import json, os, sys, time
inp, out = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(__file__))
gate = os.path.join(here, "gate-" + os.environ["SUBMISSION_ID"])
while not os.path.exists(gate):
    time.sleep(0.05)
mode = open(os.path.join(inp, "mode.txt")).read().strip()
if mode != "ok":
    sys.exit({"broken": 4, "bad-input": 65}[mode])
json.dump({"scores": {"abx": {"within": 6.5}}}, open(out, "w"))
"""


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


def queue_json(server: Server) -> dict[str, Any]:
    """`zerospeech-api queue --json`, run as its own process."""
    done = cli_process(
        server.env_file.parent, "queue", "--json", env_file=server.env_file, check=True
    )
    return json.loads(done.stdout)


def turn_time(db: Database) -> dt.datetime | None:
    """When the watchdog last ran (any process)."""
    with db.session(read_only=True) as session:
        return session.scalar(select(WatchdogTurn.ran_at).where(WatchdogTurn.name == TURN))


def alerts_about(hook: WebhookReceiver, words: str) -> list[str]:
    return [text for text in hook.texts() if words in text]


def opened_alerts_about(hook: WebhookReceiver, words: str) -> list[str]:
    """The alerts about `words`, without the "resolved" messages (which repeat the reason)."""
    return [text for text in alerts_about(hook, words) if "resolved (" not in text]


def test_watchdog_alerts_resolves_and_queue_shows_it(hook: WebhookReceiver, tmp_path: Path) -> None:
    site = Site(tmp_path, {**FAST, "ZR_ALERT_WEBHOOK_URL": hook.url})
    server = site.start_server(workers=2)
    settings, db, workers = site.settings, site.db, site.workers
    try:
        script = tmp_path / "evaluator.py"
        script.write_text(EVALUATOR)
        make_evaluator(db, "gated", f"{sys.executable} {script} {{input}} {{output}}")
        bench = make_benchmark(db, "abxLS", evaluator="gated")
        user = make_user(db, settings)

        def submit(mode: str) -> str:
            archive = zip_bytes({"mode.txt": mode})
            return make_submission(
                db, settings, user, benchmark_id=bench, has_scores=False, archive=archive
            )

        def open_gate(sid: str) -> None:
            (tmp_path / f"gate-{sid}").touch()

        # 1. No worker: the servers alert once, by webhook and by mail.
        first = submit("ok")
        wait_for(lambda: alerts_about(hook, "no worker is alive"), what="no-worker alert")
        report = queue_json(server)
        kinds = {p["kind"]: p for p in report["problems"]}
        assert kinds["no-worker"]["command"].startswith("start workers")
        assert kinds["not-queued"]["submission_id"] == first
        assert [i["submission_id"] for i in report["queue"]] == [first]
        assert report["workers"] == []
        wait_for(lambda: outbox_messages(settings), what="the operators' mail")
        assert [m["to"] for m in outbox_messages(settings)] == [OPERATOR]
        # Many periods later, still one alert: the state is in the database.
        seen = {turn_time(db)}
        wait_for(lambda: seen.add(turn_time(db)) or len(seen) >= 3, what="two more periods")
        assert len(alerts_about(hook, "no worker is alive")) == 1

        # 2. A worker: heartbeat, current job in `queue`, the alert resolved.
        site.worker()
        wait_for(lambda: alerts_about(hook, "resolved (no-worker)"), what="resolved message")

        def running() -> dict[str, Any] | None:
            data = queue_json(server)
            busy = [w for w in data["workers"] if w["current_submission_id"] == first]
            return data if busy and data["queue"] else None

        data = wait_for(running, what="the worker evaluating the first submission")
        [worker] = data["workers"]
        assert worker["alive"] and worker["pid"] == workers[0].proc.pid
        [item] = data["queue"]
        assert (item["status"], item["worker"], item["node"]) == (
            "evaluating",
            worker["id"],
            worker["node"],
        )
        open_gate(first)
        wait_for(lambda: status_of(db, first) == "completed", what="first completed")

        # 3. A platform failure alerts once; a participant's invalid archive does not.
        broken, bad = submit("broken"), submit("bad-input")
        for sid in (broken, bad):
            open_gate(sid)
        final = ("completed", "failed", "invalid")
        wait_for(lambda: all(status_of(db, s) in final for s in (broken, bad)), what="outcomes")
        assert (status_of(db, broken), status_of(db, bad)) == ("failed", "invalid")
        wait_for(lambda: alerts_about(hook, f"submission {broken} failed"), what="failure alert")
        assert alerts_about(hook, "exit code 4")
        assert not alerts_about(hook, bad)

        # 4. kill -9: the worker's row goes silent, nobody is alive, the alert comes back.
        workers[0].signal(signal.SIGKILL)
        workers[0].proc.wait(10)
        submit("ok")
        wait_for(
            lambda: len(opened_alerts_about(hook, "no worker is alive")) == 2, what="new alert"
        )
        dead = queue_json(server)["workers"]
        assert [w["alive"] for w in dead] == [False]
    finally:
        site.close()

    # 5. The webhook's secret token is in no log, and `check` shows it masked.
    logs = [server.process.output(), *(w.output() for w in workers)]
    assert all(hook.token not in text for text in logs)
    checked = cli_process(server.env_file.parent, "check", env_file=server.env_file)
    assert "alert_webhook_url" in checked.stdout + checked.stderr
    assert hook.token not in checked.stdout + checked.stderr
    assert not [d for d in hook.deliveries if d.content_type != "application/json"]
