"""Accounts over HTTP (in-process): the zrc contract's login and profile shapes, and bad input."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers.factories import DEFAULT_PASSWORD, bearer, make_user
from tests.helpers.outbox import wait_for_mail
from zerospeech_api.accounts import service
from zerospeech_api.accounts.router import LOGIN_NEEDS_FORM
from zerospeech_api.accounts.schemas import USERNAME_RULE
from zerospeech_api.db.engine import Database
from zerospeech_api.mail import outbox_dir
from zerospeech_api.security.sessions import INVALID_TOKEN
from zerospeech_api.settings import Settings

SIGNUP = {
    "username": "ada_l",
    "email": "ada@example.org",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "affiliation": "Analytical Engines",
    "password": "a long enough password",
}


@pytest.fixture(scope="module")
def plain_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One SQLite app for tests about input validation only (no need to repeat per backend)."""
    from tests.conftest import FAST_HASH
    from zerospeech_api.app import create_app
    from zerospeech_api.db.migrate import upgrade

    folder = tmp_path_factory.mktemp("plain")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=folder,
        secret_key=secrets.token_urlsafe(48),
        **FAST_HASH,
    )
    database = Database(settings.database)
    upgrade(database.engine)
    database.dispose()
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _zrc_login(client: TestClient, username: str, password: str = DEFAULT_PASSWORD):
    """The request exactly as the zrc client sends it."""
    return client.post(
        "/auth/login",
        data={
            "grant_type": "password",
            "username": username,
            "password": password,
            "client_id": "zrc-public-client",
            "client_secret": "zrc-public-secret",
        },
    )


def test_login_answers_the_contract_shape(client: TestClient, db: Database, settings: Settings):
    make_user(db, settings, username="bob", email="Bob@example.org")
    for identifier in ("bob", "BOB@example.org"):
        response = _zrc_login(client, identifier)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["username"] == "bob"
        assert body["token_type"] == "bearer"
        expiry = dt.datetime.fromisoformat(body["expiry"])
        assert expiry.tzinfo is None  # naive: an aware value crashes the client
        assert "Z" not in body["expiry"] and "+" not in body["expiry"]
        remaining = expiry - dt.datetime.now(dt.UTC).replace(tzinfo=None)
        assert remaining > dt.timedelta(days=5)  # zrc assumes at least 5 days
        profile = client.get(
            "/users/bob/profile", headers={"Authorization": f"Bearer {body['access_token']}"}
        )
        assert profile.status_code == 200


def test_profile_has_non_null_strings_and_no_token_field(
    client: TestClient, db: Database, settings: Settings
):
    user = make_user(db, settings, username="bob")
    body = client.get("/users/bob/profile", headers=bearer(db, settings, user)).json()
    for name in ("username", "first_name", "last_name", "affiliation", "email"):
        assert isinstance(body[name], str) and body[name], name
    assert "token" not in body and "password_hash" not in body


def test_profiles_of_others_are_403_and_admins_see_all(
    client: TestClient, db: Database, settings: Settings
):
    bob = make_user(db, settings, username="bob")
    make_user(db, settings, username="eve")
    admin = make_user(db, settings, username="root", admin=True)
    assert client.get("/users/eve/profile", headers=bearer(db, settings, bob)).status_code == 403
    # Non-admins cannot tell unknown users from others' accounts.
    assert client.get("/users/nobody/profile", headers=bearer(db, settings, bob)).status_code == 403
    as_admin = bearer(db, settings, admin)
    assert client.get("/users/eve/profile", headers=as_admin).json()["username"] == "eve"
    unknown = client.get("/users/nobody/profile", headers=as_admin)
    assert unknown.status_code == 404 and "nobody" in unknown.json()["detail"]
    changed = client.put("/users/eve/profile", headers=as_admin, json={"last_name": "Admin-Set"})
    assert changed.json()["last_name"] == "Admin-Set"
    refused = client.patch(
        "/users/eve/profile", headers=bearer(db, settings, bob), json={"last_name": "X"}
    )
    assert refused.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic Ym9iOnB3"}],
)
def test_profile_without_a_valid_token_is_401(
    client: TestClient, db: Database, settings: Settings, headers: dict[str, str]
):
    make_user(db, settings, username="bob")
    response = client.get("/users/bob/profile", headers=headers)
    assert response.status_code == 401
    assert isinstance(response.json()["detail"], str)


def test_profile_update_validates_fields(client: TestClient, db: Database, settings: Settings):
    headers = bearer(db, settings, make_user(db, settings, username="bob"))
    ok = client.patch("/users/bob/profile", headers=headers, json={"affiliation": "Lab"})
    assert ok.status_code == 200 and ok.json()["affiliation"] == "Lab"
    for body in (
        {},
        {"first_name": ""},
        {"first_name": None},
        {"email": "x@example.org"},
        {"affiliation": "x" * 201},
    ):
        response = client.patch("/users/bob/profile", headers=headers, json=body)
        assert response.status_code == 400, body
        assert isinstance(response.json()["detail"], str)


def test_signup_then_verify_by_json(client: TestClient, settings: Settings):
    response = client.post("/auth/signup", json=SIGNUP)
    assert response.status_code == 200
    assert response.json() == {
        "username": "ada_l",
        "email": "ada@example.org",
        "verified": False,
        "message": service.SIGNUP_DONE,
    }
    assert _zrc_login(client, "ada_l", SIGNUP["password"]).status_code == 403
    token = wait_for_mail(outbox_dir(settings), to="ada@example.org").token("verify")
    assert client.post("/auth/verify", json={"token": token}).json()["message"] == service.VERIFIED
    again = client.post("/auth/verify", json={"token": token})
    assert again.status_code == 400 and again.json()["detail"] == service.INVALID_LINK
    assert _zrc_login(client, "ada_l", SIGNUP["password"]).status_code == 200


def test_duplicate_signup_is_409_with_detail(client: TestClient):
    assert client.post("/auth/signup", json=SIGNUP).status_code == 200
    response = client.post("/auth/signup", json={**SIGNUP, "email": "other@example.org"})
    assert response.status_code == 409
    assert response.json() == {"detail": service.USERNAME_TAKEN}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"username": "ab"}, "username"),
        ({"username": "has space"}, "username"),
        ({"username": "x" * 33}, "username"),
        ({"username": "ünï"}, "username"),
        ({"email": "not-an-address"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"email": "x" * 300 + "@example.org"}, "email"),
        ({"first_name": "   "}, "first_name"),
        ({"last_name": "x" * 101}, "last_name"),
        ({"affiliation": ""}, "affiliation"),
        ({"password": "short"}, "password"),
        ({"password": "x" * 257}, "password"),
        ({"password": None}, "password"),
        ({"is_admin": True}, "is_admin"),
    ],
)
def test_bad_signups_are_400_naming_the_field(plain_client: TestClient, change: dict, field: str):
    response = plain_client.post("/auth/signup", json={**SIGNUP, **change})
    assert response.status_code == 400
    assert response.json()["detail"].startswith(field), response.json()


def test_username_rule_is_explained(plain_client: TestClient):
    response = plain_client.post("/auth/signup", json={**SIGNUP, "username": "a/b"})
    assert USERNAME_RULE in response.json()["detail"]


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
        ({"content": b"\xff\xfe\x00", "headers": {"Content-Type": "application/json"}}, 400),
        ({"json": ["a", "list"]}, 400),
        ({"content": b"username=a&password=b", "headers": {"Content-Type": "text/plain"}}, 400),
    ],
)
def test_malformed_json_bodies_are_400(plain_client: TestClient, kwargs: dict, status: int):
    for path in ("/auth/signup", "/auth/verify", "/auth/password/reset", "/auth/password/update"):
        response = plain_client.post(path, **kwargs)
        assert response.status_code == status, (path, response.text)
        assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize(
    "form",
    [
        {},
        {"username": "bob"},
        {"password": "x"},
        {"username": "", "password": "x"},
        {"username": "bob", "password": "x" * 257},
        {"username": "b" * 255, "password": "x"},
        {"username": "bob", "password": "x", "grant_type": "client_credentials"},
    ],
)
def test_malformed_login_forms_are_400(plain_client: TestClient, form: dict):
    response = plain_client.post("/auth/login", data=form)
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)


def test_login_with_json_instead_of_a_form_is_400(plain_client: TestClient):
    response = plain_client.post("/auth/login", json={"username": "bob", "password": "x"})
    assert response.status_code == 400
    # It says what to send instead, not which form fields are missing.
    assert response.json() == {"detail": LOGIN_NEEDS_FORM.format(sent="application/json")}


@pytest.mark.parametrize(
    ("headers", "sent"),
    [
        ({"Content-Type": "text/plain"}, "text/plain"),
        ({}, "no usable Content-Type"),
        ({"Content-Type": "x" * 300}, "no usable Content-Type"),
    ],
)
def test_login_without_a_form_body_says_to_send_a_form(
    plain_client: TestClient, headers: dict, sent: str
):
    response = plain_client.post("/auth/login", content=b"username=bob", headers=headers)
    assert response.status_code == 400
    assert response.json() == {"detail": LOGIN_NEEDS_FORM.format(sent=sent)}


def test_wrong_credentials_are_401_with_detail(
    client: TestClient, db: Database, settings: Settings
):
    make_user(db, settings, username="bob")
    for username, password in (("bob", "wrong password"), ("ghost", DEFAULT_PASSWORD)):
        response = _zrc_login(client, username, password)
        assert response.status_code == 401
        assert response.json() == {"detail": service.BAD_CREDENTIALS}


def test_login_throttle_is_429_with_retry_after(make_settings, db: Database, tmp_path: Path):
    from zerospeech_api.app import create_app

    settings = make_settings(database_url=db.url, login_max_failures_account=2)
    make_user(db, settings, username="bob")
    with TestClient(create_app(settings)) as client:
        assert [_zrc_login(client, "bob", "bad guess 1").status_code for _ in range(2)] == [401] * 2
        response = _zrc_login(client, "bob")
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= settings.login_window_seconds
    assert "too many failed logins" in response.json()["detail"]


def test_logout_refuses_the_token_afterwards(client: TestClient, db: Database, settings: Settings):
    headers = bearer(db, settings, make_user(db, settings, username="bob"))
    response = client.post("/auth/logout", headers=headers)
    assert response.status_code == 200 and response.json()["message"] == service.LOGGED_OUT
    after = client.get("/users/bob/profile", headers=headers)
    assert after.status_code == 401 and after.json()["detail"] == INVALID_TOKEN
    assert client.post("/auth/logout", headers=headers).status_code == 401
    assert client.post("/auth/logout").status_code == 401


def test_reset_answers_the_same_for_known_and_unknown_addresses(
    client: TestClient, db: Database, settings: Settings
):
    make_user(db, settings, username="bob", email="bob@example.org")
    known = client.post("/auth/password/reset", json={"email": "bob@example.org"})
    unknown = client.post("/auth/password/reset", json={"email": "nobody@example.org"})
    assert known.status_code == unknown.status_code == 200
    assert known.json() == unknown.json() == {"message": service.RESET_SENT}
    token = wait_for_mail(outbox_dir(settings), to="bob@example.org").token("reset")
    update = {"token": token, "password": "my new password"}
    assert client.post("/auth/password/update", json=update).status_code == 200
    reused = client.post("/auth/password/update", json=update)
    assert reused.status_code == 400 and reused.json()["detail"] == service.INVALID_LINK
    assert _zrc_login(client, "bob", "my new password").status_code == 200


def test_password_update_needs_a_token_or_bearer_and_old_password(
    client: TestClient, db: Database, settings: Settings
):
    headers = bearer(db, settings, make_user(db, settings, username="bob"))
    new = {"password": "another password"}
    assert client.post("/auth/password/update", json=new).json() == {
        "detail": service.PASSWORD_UPDATE_NEEDS
    }
    wrong = client.post(
        "/auth/password/update", headers=headers, json={**new, "old_password": "nope nope"}
    )
    assert wrong.status_code == 400 and wrong.json()["detail"] == service.WRONG_OLD_PASSWORD
    bad_token = client.post("/auth/password/update", json={**new, "token": "made-up"})
    assert bad_token.status_code == 400 and bad_token.json()["detail"] == service.INVALID_LINK
    ok = client.post(
        "/auth/password/update", headers=headers, json={**new, "old_password": DEFAULT_PASSWORD}
    )
    assert ok.status_code == 200
    assert client.get("/users/bob/profile", headers=headers).status_code == 401


def test_openapi_documents_the_account_models(plain_client: TestClient):
    spec = plain_client.get("/openapi.json").json()
    login = spec["paths"]["/auth/login"]["post"]
    assert "application/x-www-form-urlencoded" in login["requestBody"]["content"]
    ok = login["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/LoginResponse")
    for status in ("401", "403", "429"):
        assert status in login["responses"]
    profile = spec["paths"]["/users/{username}/profile"]
    assert set(profile) >= {"get", "put", "patch"}
    assert "token" not in spec["components"]["schemas"]["Profile"]["properties"]
    assert not any(p.startswith("/page") for p in spec["paths"])
