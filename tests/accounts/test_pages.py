"""The HTML pages: plain forms without JavaScript, escaped values, the same rules as the API."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tests.helpers.factories import DEFAULT_PASSWORD, make_user
from tests.helpers.outbox import wait_for_mail
from tests.helpers.pages import csrf_token
from zerospeech_api.accounts import service
from zerospeech_api.db.engine import Database
from zerospeech_api.mail import outbox_dir
from zerospeech_api.pages import accounts as pages
from zerospeech_api.settings import Settings

FORM = {
    "username": "ada_l",
    "email": "ada@example.org",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "affiliation": "Engines",
    "password": "a long enough password",
}


def csrf(client: TestClient) -> dict[str, str]:
    """The form token every post to /page/ carries (tied to the client's pre-session cookie)."""
    return {"csrf_token": csrf_token(client, "/page/signup")}


def _main(html: str) -> str:
    return html[html.index("<main>") : html.index("</main>")]


@pytest.mark.parametrize(
    ("path", "action"),
    [
        ("/page/signup", "/page/signup"),
        ("/page/verify", "/page/verify/resend"),
        ("/page/reset", "/page/reset/request"),
        ("/page/reset?token=abc", "/page/reset"),
    ],
)
def test_forms_work_without_javascript_or_outside_resources(
    client: TestClient, path: str, action: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<script" not in response.text.lower()
    assert not re.search(r"(src|href)=\"https?://", response.text)
    assert f'action="{action}"' in response.text


def test_signup_form_verify_link_and_login(client: TestClient, settings: Settings) -> None:
    done = client.post("/page/signup", data={**FORM, **csrf(client)})
    assert done.status_code == 200
    assert pages.SIGNUP_PAGE_DONE in done.text
    link = wait_for_mail(outbox_dir(settings), to=FORM["email"]).link("verify")
    path = link.removeprefix(settings.base_url)
    verified = client.get(path)
    assert verified.status_code == 200 and service.VERIFIED in verified.text
    reused = client.get(path)
    assert reused.status_code == 400 and service.INVALID_LINK in reused.text
    login = client.post("/auth/login", data={"username": "ada_l", "password": FORM["password"]})
    assert login.status_code == 200


def test_signup_form_errors_are_listed_escaped_and_the_password_not_echoed(
    client: TestClient,
) -> None:
    form = {**FORM, "username": "<b>x</b>", "first_name": '"><script>alert(1)</script>'}
    response = client.post("/page/signup", data={**form, **csrf(client)})
    assert response.status_code == 400
    main = _main(response.text)
    assert "<script>" not in main and "&lt;script&gt;" in main
    assert "&lt;b&gt;x&lt;/b&gt;" in main
    assert "username" in main and "3 to 32" in main
    assert FORM["password"] not in response.text


def test_signup_form_with_a_taken_name_says_so(
    client: TestClient, db: Database, settings: Settings
) -> None:
    make_user(db, settings, username="ada_l")
    response = client.post("/page/signup", data={**FORM, **csrf(client)})
    assert response.status_code == 400
    assert service.USERNAME_TAKEN in response.text


def test_empty_form_posts_are_400_pages_not_500(client: TestClient) -> None:
    for path in ("/page/signup", "/page/reset", "/page/reset/request", "/page/verify/resend"):
        response = client.post(path, data=csrf(client))
        assert response.status_code == 400, path
        assert response.headers["content-type"].startswith("text/html")


def test_reset_by_pages(client: TestClient, db: Database, settings: Settings) -> None:
    make_user(db, settings, username="bob", email="bob@example.org")
    known = client.post("/page/reset/request", data={"email": "bob@example.org", **csrf(client)})
    unknown = client.post("/page/reset/request", data={"email": "who@example.org", **csrf(client)})
    assert known.status_code == unknown.status_code == 200
    assert _main(known.text) == _main(unknown.text)
    link = wait_for_mail(outbox_dir(settings), to="bob@example.org").link("reset")
    form = client.get(link.removeprefix(settings.base_url))
    token = re.search(r'name="token" value="([^"]+)"', form.text).group(1)
    differ = client.post(
        "/page/reset",
        data={"token": token, "password": "new password", "confirm": "other pw 1", **csrf(client)},
    )
    assert differ.status_code == 400 and pages.PASSWORDS_DIFFER in differ.text
    new = {"token": token, "password": "new password", "confirm": "new password"}
    done = client.post("/page/reset", data={**new, **csrf(client)})
    assert done.status_code == 200 and pages.RESET_DONE in done.text
    again = client.post("/page/reset", data={**new, **csrf(client)})
    assert again.status_code == 400 and service.INVALID_LINK in again.text
    old = client.post("/auth/login", data={"username": "bob", "password": DEFAULT_PASSWORD})
    assert old.status_code == 401
    assert client.post(
        "/auth/login", data={"username": "bob", "password": "new password"}
    ).is_success


def test_token_in_the_reset_form_is_escaped(client: TestClient) -> None:
    response = client.get("/page/reset", params={"token": '"><script>x</script>'})
    assert "<script>" not in response.text
    assert 'value="&#34;&gt;&lt;script&gt;x&lt;/script&gt;"' in response.text


def test_verify_resend_page_mails_a_new_link_only_to_unverified_accounts(
    client: TestClient, db: Database, settings: Settings
) -> None:
    make_user(db, settings, username="new", email="new@example.org", verified=False)
    response = client.post("/page/verify/resend", data={"email": "NEW@example.org", **csrf(client)})
    assert response.status_code == 200 and service.VERIFY_SENT in response.text
    token = wait_for_mail(outbox_dir(settings), to="new@example.org").token("verify")
    assert client.get("/page/verify", params={"token": token}).status_code == 200


def test_verify_link_in_read_only_mode_is_423(make_settings, db: Database):
    from zerospeech_api.app import create_app
    from zerospeech_api.errors import READ_ONLY_DETAIL

    settings = make_settings(database_url=db.url, read_only=True)
    with TestClient(create_app(settings)) as client:
        response = client.get("/page/verify", params={"token": "anything"})
    assert response.status_code == 423 and READ_ONLY_DETAIL in response.text
