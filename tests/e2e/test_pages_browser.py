"""The web pages in a real headless Chromium against `serve`, with every outside host cut off:
screenshots at desktop and phone width, the table and chart rendered, nothing failing to load,
logging in through the form; and the shipped nginx config caching public pages only."""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_binary
from tests.helpers.browser import BROWSER_OWN, Browser
from tests.helpers.factories import (
    DEFAULT_PASSWORD,
    make_benchmark,
    make_leaderboard,
    make_model,
    make_submission,
    make_user,
    realistic_entry,
)
from tests.helpers.nginx import nginx_argv, render_nginx
from tests.helpers.pages import log_in
from tests.helpers.processes import Process, free_port, wait_until_responds
from tests.helpers.server import Site
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Job, JobState, Submission, SubmissionStatus, utcnow
from zerospeech_api.evaluation import jobs
from zerospeech_api.leaderboards import service
from zerospeech_api.leaderboards.definition import Column, update_leaderboard
from zerospeech_api.leaderboards.results import results_path, write_results
from zerospeech_api.submissions import storage

pytestmark = pytest.mark.e2e

SIZES = {"desktop": (1280, 900, False), "phone": (390, 844, True)}
# Set to a folder to keep the screenshots (they are looked at before a release).
SCREENSHOTS = os.environ.get("ZR_TEST_SCREENSHOTS")


@dataclass
class Populated:
    """What `_populate` made: the participant, their model and their queued submission."""

    username: str
    model_id: str
    queued: str


def _populate(db: Database, settings) -> Populated:
    """A benchmark with a 40-entry leaderboard (one of them live), and a participant with
    submissions in every interesting state."""
    bench = make_benchmark(db, "sLM21", label="Spoken Language Modelling 2021", quota="3/1d")
    make_leaderboard(db, "slm21-lexical", bench)
    rng = random.Random(21)
    entries = []
    for n in range(39):
        entry = realistic_entry(n, score=round(55 + n * 0.9 + rng.uniform(-4, 4), 3))
        day = dt.date(2021, 2, 1) + dt.timedelta(days=int(n * 22 + rng.uniform(0, 15)))
        entry["submission_date"] = day.isoformat() + "T12:00:00+00:00"
        entry["publication"]["author_short"] = rng.choice(
            ["Nguyen et al.", "Dunbar et al.", "Lakhotia et al.", "Borsos et al.", "Hsu et al."]
        )
        entry["model_id"] = f"{rng.choice(['cpc', 'hubert', 'wav2vec2'])}-{n:02d}"
        entries.append(entry)
    with db.transaction() as session:
        service.import_entries(session=session, label="slm21-lexical", entries=entries)
        update_leaderboard(
            session=session,
            label="slm21-lexical",
            columns=[
                Column("scores.lexical.all.test", "Lexical (test)", ".2f"),
                Column("scores.lexical.all.dev", "Lexical (dev)", ".2f"),
                Column("scores.syntactic.test", "Syntactic (test)", ".2f"),
                Column("scores.semantic.normal.librispeech", "Semantic", ".2f"),
            ],
        )
    user = make_user(db, settings, username="ada")
    model_id = make_model(db, user)
    done = make_submission(
        db, settings, user, benchmark_id=bench, model_id=model_id,
        status=SubmissionStatus.COMPLETED,
    )  # fmt: skip
    entry = realistic_entry(99, score=91.5, model_id=model_id, submission_id=done)
    entry["description"] = 'HuBERT-large + <b>"quoted"</b> k-means'
    entry["submission_date"] = utcnow().isoformat()  # stamped so by the worker
    write_results(results_path(settings, done), {"scores/leaderboard.json": entry})
    with db.transaction() as session:
        service.publish(
            session=session,
            submission=session.get(Submission, done),
            entries={"scores/leaderboard.json": entry},
        )
    failed = make_submission(db, settings, user, benchmark_id=bench, status=SubmissionStatus.FAILED)
    storage.evaluation_log_path(settings, failed).write_text(
        "unpacking archive\nrunning abx...\nTraceback (most recent call last):\n"
        "MemoryError: <script>alert(1)</script>\n"
    )
    running = make_submission(db, settings, user, benchmark_id=bench)
    queued = make_submission(db, settings, user, benchmark_id=bench)
    with db.transaction() as session:
        session.add(
            Job(submission_id=done, state=JobState.DONE, duration_seconds=300.0,
                finished_at=utcnow())
        )  # fmt: skip
        for sid in (running, queued):
            jobs.enqueue(session=session, submission_id=sid, max_attempts=3, reason="test")
    assert jobs.claim(db=db, owner="worker-1", lease_seconds=3600) is not None  # `running`
    return Populated(user.username, model_id, queued)


@pytest.fixture(scope="module")
def unserved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The data folder of this module's tests, before `serve` starts."""
    built = Site(tmp_path_factory.mktemp("pages"))
    try:
        yield built
    finally:
        built.close()


@pytest.fixture(scope="module")
def made(unserved: Site) -> Populated:
    return _populate(unserved.db, unserved.settings)


@pytest.fixture(scope="module")
def site(unserved: Site, made: Populated) -> Site:
    """`serve` over the populated data folder, shared by the tests of this module."""
    unserved.start_server(workers=2)
    return unserved


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    tab = Browser(require_binary("chromium"), tmp_path / "profile")
    try:
        yield tab
    finally:
        tab.close()


def _shoot(browser: Browser, url: str, name: str, folder: Path) -> list[Path]:
    """Open `url` at each size and save a full-page screenshot of each."""
    shots = []
    for size, (width, height, mobile) in SIZES.items():
        browser.viewport(width, height, mobile=mobile)
        browser.open(url)
        shots.append(browser.screenshot(folder / f"{name}-{size}.png"))
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copy(shot, Path(SCREENSHOTS) / shot.name)
    return shots


def _only_this_server(browser: Browser, base: str) -> None:
    foreign = [
        u for u in browser.requested()
        if u.startswith("http") and not u.startswith(base)
        and not any(host in u for host in BROWSER_OWN)
    ]  # fmt: skip
    assert foreign == []
    assert browser.problems() == []


def test_public_pages_render_offline_at_desktop_and_phone_width(
    site: Site, made: Populated, browser: Browser, tmp_path: Path
) -> None:
    base = site.url
    pages = {
        "index": "/page/",
        "benchmark": "/page/benchmarks/sLM21",
        "leaderboard": "/page/leaderboards/slm21-lexical",
        "leaderboard-by-date": "/page/leaderboards/slm21-lexical?sort=-date",
        "model": f"/page/models/{made.model_id}",
    }
    for name, path in pages.items():
        for shot in _shoot(browser, base + path, name, tmp_path):
            assert shot.stat().st_size > 5000, shot  # a page, not a blank image
        assert browser.url() == base + path
        _only_this_server(browser, base)
    browser.open(base + pages["leaderboard"])
    assert browser.count("table thead th[scope=col]") == 8
    assert browser.count("table tbody tr") == 40
    assert browser.count("svg circle") == 40 and browser.count("svg path.best-line") == 1
    html = browser.html()
    assert "&lt;b&gt;" in html and "<b>" not in html  # the entry's description, as text
    # The stylesheet was applied (a rule of it shows in the computed layout): the header bar.
    assert any(u.startswith(f"{base}/page/static/style.css") for u in browser.requested())


def test_logging_in_through_the_form_and_using_the_participant_page(
    site: Site, made: Populated, browser: Browser, tmp_path: Path
) -> None:
    base = site.url
    browser.viewport(1280, 900)
    browser.open(f"{base}/page/me")
    assert browser.url() == f"{base}/page/login"  # not logged in yet
    browser.type_into("#username", made.username)
    browser.type_into("#password", DEFAULT_PASSWORD)
    browser.click("form[action='/page/login'] button")
    assert browser.url() == f"{base}/page/me"
    html = browser.html()
    assert "position 1 in the evaluation queue" in html
    assert "MemoryError" in html and "<script>alert" not in html
    assert browser.count("article.card") == 4
    _shoot(browser, f"{base}/page/me", "me", tmp_path)
    _only_this_server(browser, base)
    # The cancel button of the queued submission.
    browser.viewport(1280, 900)
    browser.open(f"{base}/page/me")
    browser.click(f"form[action='/page/me/submissions/{made.queued}/cancel'] button")
    assert browser.url().startswith(f"{base}/page/me?notice=cancelled")
    with site.db.session(read_only=True) as session:
        assert session.get(Submission, made.queued).status == SubmissionStatus.CANCELLED
    # Log out: back to the login form; /page/me asks for a login again.
    browser.click("form[action='/page/logout'] button")
    assert browser.url() == f"{base}/page/login?notice=out"
    browser.open(f"{base}/page/me")
    assert browser.url() == f"{base}/page/login"
    assert browser.problems() == []


def test_nginx_caches_public_pages_and_never_personal_ones(
    site: Site, made: Populated, tmp_path: Path
) -> None:
    nginx = require_binary("nginx")
    port = free_port()
    config = render_nginx(tmp_path, nginx_port=port, api_port=site.port)
    proxy = Process(nginx_argv(nginx, config), cwd=tmp_path, env=dict(os.environ),
                    log=tmp_path / "nginx.out")  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_responds(f"{url}/health", proxy)
        with httpx.Client(base_url=url) as client:
            for path in ("/page/", "/page/leaderboards/slm21-lexical?sort=-date",
                         "/page/benchmarks/sLM21", "/page/static/icon.svg"):  # fmt: skip
                first, second = client.get(path), client.get(path)
                assert first.status_code == second.status_code == 200, path
                assert (first.headers["x-cache-status"], second.headers["x-cache-status"]) == (
                    "MISS", "HIT"
                ), path  # fmt: skip
                assert second.content == first.content
            form = client.get("/page/login")
            assert (
                "x-cache-status" not in form.headers and form.headers["cache-control"] == "no-store"
            )
            assert log_in(client, made.username, DEFAULT_PASSWORD).status_code == 303
            for _ in range(2):
                me = client.get("/page/me")
                assert me.status_code == 200 and made.username in me.text
                assert (
                    "x-cache-status" not in me.headers and me.headers["cache-control"] == "no-store"
                )
    finally:
        proxy.stop()
