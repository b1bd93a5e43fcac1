"""The participant's pages: login by form (cookie flags, throttle), /page/me (only one's own
submissions, queue, log, scores, quota), cancel and delete buttons, CSRF, logout."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.helpers.factories import (
    DEFAULT_PASSWORD,
    make_benchmark,
    make_submission,
    make_user,
    status_of,
)
from tests.helpers.pages import csrf_token, log_in, submit
from zerospeech_api.accounts.service import BAD_CREDENTIALS
from zerospeech_api.app import create_app
from zerospeech_api.db.tables import SubmissionStatus
from zerospeech_api.evaluation import jobs
from zerospeech_api.leaderboards.results import results_path, write_results
from zerospeech_api.pages.csrf import CSRF_REFUSED, SESSION_COOKIE
from zerospeech_api.submissions import storage

HOSTILE = '"><script>alert(1)</script>'


@pytest.fixture
def browser(app) -> Iterator[TestClient]:
    """A second client of the same app: another browser with its own cookies."""
    with TestClient(app, raise_server_exceptions=False) as other:
        yield other


def set_cookie_header(response) -> str:
    return next(
        v for k, v in response.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v
    )


def test_login_sets_a_strict_session_cookie_and_me_shows_the_user(client, db, settings) -> None:
    assert client.get("/page/me", follow_redirects=False).headers["location"] == "/page/login"
    user = make_user(db, settings)
    response = log_in(client, user.username, DEFAULT_PASSWORD)
    assert response.status_code == 303 and response.headers["location"] == "/page/me"
    cookie = set_cookie_header(response).lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/page" in cookie
    assert "secure" not in cookie  # http base URL: a laptop setup must work
    me = client.get("/page/me")
    assert me.status_code == 200 and user.username in me.text
    assert me.headers["cache-control"] == "no-store"
    assert "content-security-policy" in me.headers
    # The cookie is an API session: the same token works as a bearer token.
    token = client.cookies.get(SESSION_COOKIE)
    profile = client.get(
        f"/users/{user.username}/profile", headers={"Authorization": f"Bearer {token}"}
    )
    assert profile.status_code == 200


def test_the_cookie_is_secure_behind_https(make_settings, db) -> None:
    settings = make_settings(database_url=db.url, base_url="https://zerospeech.example.org")
    user = make_user(db, settings)
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        response = log_in(client, user.username, DEFAULT_PASSWORD)
    assert "secure" in set_cookie_header(response).lower()


def test_wrong_passwords_count_in_the_same_throttle_as_the_api(make_settings, db) -> None:
    settings = make_settings(database_url=db.url, login_max_failures_account=2)
    user = make_user(db, settings)
    with TestClient(create_app(settings)) as client:
        wrong = log_in(client, user.username + HOSTILE, "wrong password")
        assert wrong.status_code == 401 and BAD_CREDENTIALS in wrong.text
        assert "<script>" not in wrong.text  # the name typed is shown back, escaped
        assert log_in(client, user.username, "wrong password").status_code == 401
        assert log_in(client, user.username, "wrong password 2").status_code == 401
        locked = client.post(
            "/auth/login", data={"username": user.username, "password": DEFAULT_PASSWORD}
        )
        assert locked.status_code == 429
        page = log_in(client, user.username, DEFAULT_PASSWORD)
        assert page.status_code == 429 and "retry-after" in page.headers


def test_forms_without_a_valid_token_are_refused(client, browser, db, settings) -> None:
    user = make_user(db, settings)
    form = {"username": user.username, "password": DEFAULT_PASSWORD}
    no_token = client.post("/page/login", data=form)
    assert no_token.status_code == 403 and no_token.json()["detail"] == CSRF_REFUSED
    forged = client.post("/page/login", data={**form, "csrf_token": "x" * 43})
    assert forged.status_code == 403
    # A token is tied to its browser's cookie: another browser's token does not pass.
    theirs = csrf_token(browser, "/page/login")
    csrf_token(client, "/page/login")
    assert client.post("/page/login", data={**form, "csrf_token": theirs}).status_code == 403
    assert log_in(client, user.username, DEFAULT_PASSWORD).status_code == 303
    # Logged in, the token changes with the session: the pre-login one no longer works.
    sid = make_submission(db, settings, user, benchmark_id=make_benchmark(db))
    old = csrf_token(browser, "/page/login")
    refused = client.post(f"/page/me/submissions/{sid}/cancel", data={"csrf_token": old})
    assert refused.status_code == 403 and status_of(db, sid) == SubmissionStatus.UPLOADED
    assert client.post("/page/logout").status_code == 403  # logout is a form too


def test_me_shows_own_submissions_newest_first_with_queue_log_scores_and_quota(
    client, browser, db, settings
) -> None:
    user, other = make_user(db, settings), make_user(db, settings)
    bench = make_benchmark(db, label="Spoken LM", quota="3/1d")
    done = make_submission(
        db, settings, user, benchmark_id=bench, status=SubmissionStatus.COMPLETED
    )
    write_results(
        results_path(settings, done),
        {"scores/leaderboard.json": {"scores": {"lexical": {"test": 93.0215}}}},
    )
    failed = make_submission(db, settings, user, benchmark_id=bench, status=SubmissionStatus.FAILED)
    log = storage.evaluation_log_path(settings, failed)
    log.write_text("loading...\n" + HOSTILE + "\nTraceback: out of memory\n")
    waiting = make_submission(db, settings, user, benchmark_id=bench)
    with db.transaction() as session:
        jobs.enqueue(session=session, submission_id=waiting, max_attempts=3, reason="test")
    theirs = make_submission(db, settings, other, benchmark_id=bench)
    log_in(client, user.username, DEFAULT_PASSWORD)
    html = client.get("/page/me").text
    cards = re.findall(r'<article class="card" id="sub-([^"]+)"', html)
    assert cards == [waiting, failed, done]  # newest first; nobody else's
    assert theirs not in html
    assert "position 1 in the evaluation queue" in html
    assert "out of memory" in html and "<script>" not in html
    assert "93.02" in html  # the completed one's scores
    quota = html[html.index('id="quota"') : html.index('id="submissions"')]
    # Three submissions, the failed one does not count: 2 used, 1 left.
    assert re.search(r">3 per 1d</td><td[^>]*>2</td><td[^>]*>1</td>", quota), quota
    # The other participant sees only their own page.
    log_in(browser, other.username, DEFAULT_PASSWORD)
    theirs_page = browser.get("/page/me").text
    assert theirs in theirs_page and waiting not in theirs_page and done not in theirs_page


def test_cancel_and_delete_buttons(client, browser, db, settings) -> None:
    user, other = make_user(db, settings), make_user(db, settings)
    bench = make_benchmark(db)
    queued = make_submission(db, settings, user, benchmark_id=bench)
    with db.transaction() as session:
        jobs.enqueue(session=session, submission_id=queued, max_attempts=3, reason="test")
    failed = make_submission(db, settings, user, benchmark_id=bench, status=SubmissionStatus.FAILED)
    theirs = make_submission(
        db, settings, other, benchmark_id=bench, status=SubmissionStatus.FAILED
    )
    log_in(client, user.username, DEFAULT_PASSWORD)
    page = client.get("/page/me").text
    assert f'action="/page/me/submissions/{queued}/cancel"' in page
    assert f'action="/page/me/submissions/{queued}/delete"' not in page  # not while queued
    assert f'action="/page/me/submissions/{failed}/delete"' in page
    cancelled = submit(
        client, "/page/me", f"/page/me/submissions/{queued}/cancel", follow_redirects=False
    )
    assert cancelled.status_code == 303 and status_of(db, queued) == SubmissionStatus.CANCELLED
    assert "no longer counts" in client.get(cancelled.headers["location"]).text
    deleted = submit(
        client, "/page/me", f"/page/me/submissions/{failed}/delete", follow_redirects=False
    )
    assert deleted.status_code == 303 and status_of(db, failed) is None
    # Someone else's submission: refused, untouched.
    refused = submit(client, "/page/me", f"/page/me/submissions/{theirs}/delete")
    assert refused.status_code == 403 and status_of(db, theirs) == SubmissionStatus.FAILED
    again = submit(client, "/page/me", f"/page/me/submissions/{queued}/cancel")
    assert again.status_code == 409 and "cannot be cancelled" in again.text
    # Without a session the buttons lead to the login page and change nothing.
    token = csrf_token(browser, "/page/login")
    anonymous = browser.post(
        f"/page/me/submissions/{theirs}/delete", data={"csrf_token": token}, follow_redirects=False
    )
    assert anonymous.status_code == 303 and status_of(db, theirs) == SubmissionStatus.FAILED


def test_logout_ends_the_session(client, db, settings) -> None:
    user = make_user(db, settings)
    log_in(client, user.username, DEFAULT_PASSWORD)
    token = client.cookies.get(SESSION_COOKIE)
    out = submit(client, "/page/me", "/page/logout", follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/page/login?notice=out"
    assert (
        SESSION_COOKIE in set_cookie_header(out) and "max-age=0" in set_cookie_header(out).lower()
    )
    assert client.get("/page/me", follow_redirects=False).status_code == 303
    # The server-side session is revoked: the old cookie value works nowhere any more.
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/users/{user.username}/profile", headers=bearer).status_code == 401
    client.cookies.set(SESSION_COOKIE, token, path="/page")
    assert client.get("/page/me", follow_redirects=False).status_code == 303
