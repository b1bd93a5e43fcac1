"""GET /metrics in one process: route-template labels, the database gauges, who may read it.
(tests/e2e/test_metrics_serve.py checks the aggregation over gunicorn workers and nginx.)"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.helpers.factories import make_benchmark, make_submission, make_user
from tests.helpers.metrics import label_values, parse_samples, value
from zerospeech_api.app import create_app
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Job, JobState, SubmissionStatus, WorkerHeartbeat, utcnow
from zerospeech_api.metrics.folder import MULTIPROCESS_ENV, metrics_folder, use_metrics_folder
from zerospeech_api.metrics.http import OTHER_METHOD, UNMATCHED
from zerospeech_api.metrics.router import NOT_LOOPBACK, WRONG_TOKEN
from zerospeech_api.settings import Settings, SettingsError, load_settings

LOOPBACK = ("127.0.0.1", 50000)
OUTSIDE = ("203.0.113.7", 50000)
REQUESTS = "zr_http_requests_total"


@pytest.fixture
def local(app: FastAPI) -> Iterator[TestClient]:
    """A client connecting from 127.0.0.1."""
    with TestClient(app, raise_server_exceptions=False, client=LOOPBACK) as client:
        yield client


def scrape(client: TestClient, **headers: str) -> dict:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_samples(response.text)


# --- HTTP metrics --------------------------------------------------------------------------------


def test_requests_are_labelled_by_route_template_never_by_raw_path(local: TestClient) -> None:
    secret_id = f"sub-{secrets.token_hex(8)}"
    answers = [
        local.get("/").status_code,
        local.post(f"/submissions/{secret_id}/content/add").status_code,  # no form: 400
        local.get(f"/leaderboards/{secret_id}/json").status_code,  # a plain Starlette route
        local.get("/page/static/style.css").status_code,
        local.head("/health").status_code,
        local.post("/health").status_code,  # 405: the route matched, not the method
        local.get(f"/no/such/{secret_id}").status_code,
    ]
    assert answers == [200, 400, 404, 200, 200, 405, 404]
    samples = scrape(local)
    expected = [
        ("GET", "/", "200"),
        ("POST", "/submissions/{submission_id}/content/add", "400"),
        ("GET", "/leaderboards/{label}/json", "404"),
        ("GET", "/page/static/{name}", "200"),
        ("HEAD", "/health", "200"),
        ("POST", "/health", "405"),
        ("GET", UNMATCHED, "404"),
    ]
    for method, route, status in expected:
        assert value(samples, REQUESTS, method=method, route=route, status=status) == 1, route
    assert all(secret_id not in route for route in label_values(samples, REQUESTS, "route"))
    count = value(samples, "zr_http_request_duration_seconds_count", method="GET", route="/")
    assert count == 1
    assert value(samples, "zr_http_request_duration_seconds_sum", method="GET", route="/") > 0


def test_docs_assets_are_labelled_by_their_mount(local: TestClient) -> None:
    docs = local.get("/docs").text
    asset = docs.split('href="/static/docs/', 1)[1].split('"', 1)[0]
    assert local.get(f"/static/docs/{asset}").status_code == 200
    samples = scrape(local)
    assert value(samples, REQUESTS, method="GET", route="/static/docs/{path}", status="200") == 1


def test_refusals_before_routing_are_labelled_by_the_route_they_aimed_at(
    local: TestClient,
) -> None:
    too_big = local.post(
        "/submissions/abc/content/add", headers={"Content-Length": str(10**12)}, content=b""
    )
    assert too_big.status_code == 413
    control = local.get("/users/a%1bb/profile")
    assert control.status_code == 400
    samples = scrape(local)
    route = "/submissions/{submission_id}/content/add"
    assert value(samples, REQUESTS, method="POST", route=route, status="413") == 1
    assert value(samples, REQUESTS, method="GET", route="/users/{username}/profile", status="400")


def test_a_scanner_adds_no_series(local: TestClient) -> None:
    for n in range(40):
        local.request("GET", f"/wp-admin/{n}.php")
        local.request(f"X{n}", f"/scan/{n}")
    samples = scrape(local)
    assert label_values(samples, REQUESTS, "route") <= {UNMATCHED, "/metrics"}
    assert label_values(samples, REQUESTS, "method") == {"GET", OTHER_METHOD}
    assert value(samples, REQUESTS, method="GET", route=UNMATCHED, status="404") == 40


# --- database gauges -----------------------------------------------------------------------------


def _add_jobs(db: Database, submission_id: str, jobs: list[Job]) -> None:
    with db.transaction() as session:
        for job in jobs:
            job.submission_id = submission_id
            session.add(job)


def test_database_gauges_are_read_at_scrape_time(
    local: TestClient, db: Database, settings: Settings
) -> None:
    samples = scrape(local)
    assert value(samples, "zr_evaluation_queue_depth") == 0
    assert value(samples, "zr_evaluation_oldest_queued_seconds") == 0
    assert value(samples, "zr_workers_alive") == 0
    assert value(samples, "zr_submissions", status="queued") == 0
    assert value(samples, "zr_evaluation_duration_seconds_count") == 0

    user = make_user(db, settings)
    benchmark = make_benchmark(db)
    statuses = [SubmissionStatus.QUEUED] * 3 + [SubmissionStatus.COMPLETED] * 2
    ids = [make_submission(db, settings, user, benchmark_id=benchmark, status=s) for s in statuses]
    ids.append(make_submission(db, settings, user, benchmark_id=benchmark))  # uploaded
    now = utcnow()
    _add_jobs(db, ids[0], [Job(state=JobState.QUEUED, created_at=now - dt.timedelta(minutes=10))])
    _add_jobs(db, ids[1], [Job(state=JobState.QUEUED, created_at=now - dt.timedelta(minutes=2))])
    _add_jobs(db, ids[2], [Job(state=JobState.RUNNING, created_at=now - dt.timedelta(hours=1))])
    for submission_id, seconds in ((ids[3], 4.0), (ids[4], 90.0)):
        job = Job(state=JobState.DONE, duration_seconds=seconds, finished_at=now)
        _add_jobs(db, submission_id, [job])
    with db.transaction() as session:
        for n, seen in enumerate((now, now - dt.timedelta(seconds=5), now - dt.timedelta(hours=1))):
            session.add(
                WorkerHeartbeat(
                    id=f"node-a:{100 + n}:x",
                    node="node-a",
                    pid=100 + n,
                    started_at=seen,
                    last_seen_at=seen,
                )
            )

    samples = scrape(local)
    assert value(samples, "zr_submissions", status="queued") == 3
    assert value(samples, "zr_submissions", status="completed") == 2
    assert value(samples, "zr_submissions", status="uploaded") == 1
    assert value(samples, "zr_submissions", status="failed") == 0  # every status, zero too
    assert ("zr_submissions", frozenset({("status", "failed")})) in samples
    assert value(samples, "zr_evaluation_queue_depth") == 2  # the running job does not wait
    assert 600 <= value(samples, "zr_evaluation_oldest_queued_seconds") < 900
    assert value(samples, "zr_workers_alive") == 2  # the one silent for an hour is dead
    assert value(samples, "zr_evaluation_duration_seconds_count") == 2
    assert value(samples, "zr_evaluation_duration_seconds_sum") == 94
    assert value(samples, "zr_evaluation_duration_seconds_bucket", le="1.0") == 0
    assert value(samples, "zr_evaluation_duration_seconds_bucket", le="5.0") == 1
    assert value(samples, "zr_evaluation_duration_seconds_bucket", le="60.0") == 1
    assert value(samples, "zr_evaluation_duration_seconds_bucket", le="120.0") == 2
    assert value(samples, "zr_evaluation_duration_seconds_bucket", le="+Inf") == 2


def test_an_unreadable_database_leaves_the_http_metrics(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    broken = make_settings(database_url=f"sqlite:///{tmp_path / 'missing' / 'no.db'}")
    with TestClient(create_app(broken), raise_server_exceptions=False, client=LOOPBACK) as client:
        client.get("/")
        samples = scrape(client)
    assert value(samples, REQUESTS, method="GET", route="/", status="200") == 1
    assert value(samples, "zr_evaluation_queue_depth") == 0
    assert not any(name.startswith("zr_evaluation") for name, _ in samples)


# --- who may read it -----------------------------------------------------------------------------


@pytest.fixture
def client_from(
    make_settings: Callable[..., Settings], migrated_database_url: str
) -> Callable[..., TestClient]:
    """A client connecting from `peer` to an app with these setting overrides."""

    def factory(peer: tuple[str, int], **overrides: object) -> TestClient:
        settings = make_settings(database_url=migrated_database_url, **overrides)
        return TestClient(create_app(settings), raise_server_exceptions=False, client=peer)

    return factory


def test_outside_clients_are_refused_without_the_token(
    client_from: Callable[..., TestClient],
) -> None:
    with client_from(OUTSIDE) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 403
        assert refused.json() == {"detail": NOT_LOOPBACK}
        # A participant's session token is not the metrics token.
        wrong = client.get("/metrics", headers={"Authorization": "Bearer someone-elses-jwt"})
        assert wrong.status_code == 401
        assert wrong.json() == {"detail": WRONG_TOKEN}


def test_the_metrics_token_opens_it_from_anywhere(client_from: Callable[..., TestClient]) -> None:
    token = secrets.token_urlsafe(24)
    with client_from(OUTSIDE, metrics_token=token) as client:
        assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).is_success
        assert client.get("/metrics", headers={"Authorization": f"bearer {token}"}).is_success
        wrong = client.get("/metrics", headers={"Authorization": f"Bearer {token}x"})
        assert wrong.status_code == 401
        assert client.get("/metrics", headers={"Authorization": token}).status_code == 401
        assert client.get("/metrics").status_code == 403


def test_loopback_is_not_trusted_when_every_proxy_is(
    client_from: Callable[..., TestClient],
) -> None:
    # With ZR_FORWARDED_ALLOW_IPS=* anyone can claim 127.0.0.1 in X-Forwarded-For.
    with client_from(LOOPBACK, forwarded_allow_ips="*") as client:
        assert client.get("/metrics").status_code == 403
    with client_from(LOOPBACK) as client:
        assert client.get("/metrics").status_code == 200


def test_the_token_is_a_masked_secret_of_some_length(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ZR_METRICS_TOKEN"):
        load_settings(tmp_path / "none.env", metrics_token="short")
    token = secrets.token_urlsafe(24)
    shown = load_settings(tmp_path / "none.env", metrics_token=token).public_items()
    assert shown["metrics_token"] == "********"
    assert token not in repr(load_settings(tmp_path / "none.env", metrics_token=token))


# --- the multiprocess folder ---------------------------------------------------------------------


def test_the_folder_is_emptied_and_handed_to_the_children(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    folder = metrics_folder(settings)
    folder.mkdir(parents=True)
    (folder / "counter_4242.db").write_bytes(b"stale")
    monkeypatch.setenv(MULTIPROCESS_ENV, "elsewhere")  # restored after the test
    assert use_metrics_folder(settings) == folder
    assert folder.is_relative_to(settings.data_dir.resolve())
    assert list(folder.iterdir()) == []
    assert os.environ[MULTIPROCESS_ENV] == str(folder)


def test_a_file_a_worker_is_creating_does_not_fail_the_scrape(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker creates its metrics file empty, then sizes it: a scrape in between read the
    empty file with prometheus-client's reader and answered 500."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.values import MultiProcessValue

    from zerospeech_api.metrics.router import WorkerFiles

    folder = metrics_folder(make_settings())
    folder.mkdir(parents=True)
    monkeypatch.setenv(MULTIPROCESS_ENV, str(folder))
    # Another worker's counter, written the way the library writes it (pid 4242).
    value_class = MultiProcessValue(process_identifier=lambda: 4242)
    value_class("counter", "zr_probe_total", "zr_probe_total", (), (), "").inc(3)
    (folder / "counter_4343.db").touch()  # a worker's file, created and not yet sized
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerFiles(str(folder)))
    samples = {s.name: s.value for m in registry.collect() for s in m.samples}
    assert samples["zr_probe_total"] == 3
