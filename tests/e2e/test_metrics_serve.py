"""/metrics from a real `serve` with several gunicorn workers, and behind the shipped nginx."""

from __future__ import annotations

import datetime as dt
import http.client
import os
import secrets
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_binary
from tests.helpers.factories import make_benchmark, make_submission, make_user
from tests.helpers.metrics import Samples, parse_samples, value
from tests.helpers.nginx import nginx_argv, render_nginx
from tests.helpers.processes import Process, free_port, wait_for, wait_until_responds
from tests.helpers.server import Server
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Job, JobState, SubmissionStatus, WorkerHeartbeat, utcnow
from zerospeech_api.metrics.folder import metrics_folder
from zerospeech_api.metrics.router import NOT_LOOPBACK
from zerospeech_api.settings import Settings, load_settings

pytestmark = pytest.mark.e2e

REQUESTS = "zr_http_requests_total"


def scrape(server: Server, **headers: str) -> Samples:
    """One scrape on a new connection (any worker may answer it)."""
    response = httpx.get(f"{server.url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return parse_samples(response.text)


def index_count(samples: Samples) -> float:
    return value(samples, REQUESTS, method="GET", route="/", status="200")


def wait_for_index_count(server: Server, expected: int) -> None:
    """A request is counted just after its answer is sent: wait for the last ones to land."""
    wait_for(lambda: index_count(scrape(server)) == expected, timeout=10, what=f"{expected} GET /")


def worker_pids(settings: Settings) -> set[int]:
    """The processes that wrote counters (gunicorn workers) into the multiprocess folder."""
    return {int(path.stem.split("_")[-1]) for path in metrics_folder(settings).glob("counter_*")}


def send_index_requests(server: Server, count: int) -> None:
    """`count` GETs of / on fresh connections from 8 threads, so every worker gets some."""

    def one(_: int) -> int:
        return httpx.get(f"{server.url}/", timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(count))) == {200}


def test_counts_are_the_sum_over_every_worker_and_survive_a_worker_death(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(workers=3)
    settings = load_settings(server.env_file)
    sent = 0
    while len(worker_pids(settings)) < 2 and sent < 2000:
        send_index_requests(server, 40)
        sent += 40
    assert len(worker_pids(settings)) >= 2, "the requests all went to one worker"
    # Whichever worker answers a scrape, it reports every worker's requests.
    wait_for_index_count(server, sent)
    for _ in range(6):
        assert index_count(scrape(server)) == sent
    samples = scrape(server)
    assert value(samples, "zr_http_request_duration_seconds_count", method="GET", route="/") == (
        sent
    )
    with httpx.Client(base_url=server.url) as client:
        assert client.get(f"/users/{secrets.token_hex(6)}/profile").status_code == 401
    labelled = scrape(server)
    assert value(labelled, REQUESTS, method="GET", route="/users/{username}/profile", status="401")

    # A worker killed by the kernel: gunicorn replaces it, and its requests still count.
    victim = max(worker_pids(settings))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{victim}").exists(), what="the killed worker to go")
    send_index_requests(server, 16)
    wait_for_index_count(server, sent + 16)


def test_a_restart_starts_from_zero(make_server: Callable[..., Server]) -> None:
    first = make_server(workers=2)
    send_index_requests(first, 10)
    wait_for_index_count(first, 10)
    first.stop()
    second = make_server(workers=2, init=False)  # same data folder
    assert index_count(scrape(second)) == 0


def test_database_gauges_come_from_the_servers_database(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(workers=2)
    settings = load_settings(server.env_file)
    before = scrape(server)
    assert value(before, "zr_workers_alive") == 0
    assert value(before, "zr_evaluation_queue_depth") == 0

    db = Database(settings.database)
    try:
        user = make_user(db, settings)
        benchmark = make_benchmark(db)
        queued = make_submission(
            db, settings, user, benchmark_id=benchmark, status=SubmissionStatus.QUEUED
        )
        now = utcnow()
        with db.transaction() as session:
            session.add(
                Job(
                    submission_id=queued,
                    state=JobState.QUEUED,
                    created_at=now - dt.timedelta(seconds=300),
                )
            )
            session.add(
                WorkerHeartbeat(id="node-b:7:e2e", node="node-b", pid=7, started_at=now,
                                last_seen_at=now)
            )  # fmt: skip
    finally:
        db.dispose()

    after = scrape(server)
    assert value(after, "zr_workers_alive") == 1
    assert value(after, "zr_evaluation_queue_depth") == 1
    assert 300 <= value(after, "zr_evaluation_oldest_queued_seconds") < 600
    assert value(after, "zr_submissions", status="queued") == 1


def test_outside_clients_need_the_token(make_server: Callable[..., Server]) -> None:
    token = secrets.token_urlsafe(24)
    server = make_server(workers=2, env={"ZR_METRICS_TOKEN": token})
    assert httpx.get(f"{server.url}/metrics").status_code == 200  # loopback
    # What a proxy on this host relays for an outside client: gunicorn believes the forwarded
    # address from 127.0.0.1 (ZR_FORWARDED_ALLOW_IPS), and that address is not loopback.
    relayed = {"X-Forwarded-For": "203.0.113.9"}
    refused = httpx.get(f"{server.url}/metrics", headers=relayed)
    assert refused.status_code == 403
    assert refused.json() == {"detail": NOT_LOOPBACK}
    wrong = httpx.get(f"{server.url}/metrics", headers={**relayed, "Authorization": "Bearer x"})
    assert wrong.status_code == 401
    assert scrape(server, **relayed, Authorization=f"Bearer {token}")
    server.stop()
    assert token not in server.process.output()


def _raw_get(port: int, target: str, method: str = "GET") -> tuple[int, bytes, str | None]:
    """Send `target` exactly as written (no client-side normalisation)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("x-request-id")
    finally:
        connection.close()


def test_the_shipped_nginx_config_does_not_expose_metrics(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    nginx = require_binary("nginx")
    server = make_server(workers=2)
    folder = tmp_path / "nginx"
    folder.mkdir()
    port = free_port()
    config = render_nginx(folder, nginx_port=port, api_port=server.port)
    proxy = Process(nginx_argv(nginx, config), cwd=folder, env=dict(os.environ),
                    log=folder / "nginx.out")  # fmt: skip
    try:
        wait_until_responds(f"http://127.0.0.1:{port}/health", proxy)
        for target in ("/metrics", "/metrics?format=x", "//metrics", "/%6Detrics", "/./metrics",
                       "/x/../metrics"):  # fmt: skip
            status, body, request_id = _raw_get(port, target)
            assert status == 404, target
            assert request_id is None, f"{target} reached the app"
            assert b"zr_http_requests_total" not in body
        assert _raw_get(port, "/metrics", "HEAD")[0] == 404
        # Nothing reached the app's /metrics route, and the app itself still answers locally.
        samples = scrape(server)
        assert value(samples, REQUESTS, method="GET", route="/metrics", status="200") == 0
        assert value(samples, REQUESTS, method="GET", route="/health", status="200") >= 1
    finally:
        proxy.stop()
