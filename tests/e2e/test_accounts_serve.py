"""Accounts against a real `serve` (gunicorn, 2 uvicorn workers, SQLite in a temp data folder)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from sqlalchemy import func, select

from tests.helpers.outbox import Mail, wait_for_mail
from tests.helpers.pages import csrf_token, submit
from tests.helpers.processes import wait_for
from tests.helpers.server import Server
from zerospeech_api.accounts import service
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import OneTimeToken, TokenPurpose, User, utcnow
from zerospeech_api.security import ratelimit
from zerospeech_api.security.sessions import INVALID_TOKEN
from zerospeech_api.security.tokens import ALGORITHM, new_one_time_token
from zerospeech_api.settings import load_settings

pytestmark = pytest.mark.e2e


def _person(username: str, password: str = "first password 1") -> dict[str, str]:
    return {
        "username": username,
        "email": f"{username}@example.org",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "affiliation": "Analytical Engines",
        "password": password,
    }


def _zrc_login(client: httpx.Client, username: str, password: str, **kwargs) -> httpx.Response:
    form = {
        "grant_type": "password",
        "username": username,
        "password": password,
        "client_id": "zrc",
        "client_secret": "zrc-secret",
    }
    return client.post("/auth/login", data=form, **kwargs)


def _path(link: str) -> str:
    """Links carry ZR_BASE_URL; the test talks to the server's random port."""
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


def _outbox(server: Server) -> Path:
    return load_settings(server.env_file).data_dir / "outbox"


def _signup_and_verify(client: httpx.Client, server: Server, username: str, **kw: str) -> None:
    person = _person(username, **kw)
    assert client.post("/auth/signup", json=person).status_code == 200
    mail = wait_for_mail(_outbox(server), to=person["email"])
    assert client.get(_path(mail.link("verify"))).status_code == 200


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_account_lifecycle(make_server: Callable[..., Server]) -> None:
    server = make_server(workers=2)
    settings = load_settings(server.env_file)
    secrets_seen: list[str] = ["first password 1", "second password 2"]
    with server.client() as client:
        # Sign up by JSON, verify with the mailed link; a second user by the HTML form.
        signup = client.post("/auth/signup", json=_person("ada"))
        assert signup.status_code == 200 and signup.json()["verified"] is False
        early = _zrc_login(client, "ada", "first password 1")
        assert early.status_code == 403 and early.json()["detail"] == service.NOT_VERIFIED
        mail: Mail = wait_for_mail(_outbox(server), to="ada@example.org")
        secrets_seen.append(mail.token("verify"))
        verified = client.get(_path(mail.link("verify")))
        assert verified.status_code == 200 and service.VERIFIED in verified.text
        assert client.get(_path(mail.link("verify"))).status_code == 400  # single use
        form = submit(client, "/page/signup", "/page/signup", _person("bob", "bobs password"))
        assert form.status_code == 200
        bob_mail = wait_for_mail(_outbox(server), to="bob@example.org")
        secrets_seen.append(bob_mail.token("verify"))
        assert client.post("/auth/verify", json={"token": bob_mail.token("verify")}).is_success

        # Login by username and by e-mail, as zrc does; both tokens work.
        by_name = _zrc_login(client, "ada", "first password 1")
        by_mail = _zrc_login(client, "ADA@example.org", "first password 1")
        assert by_name.status_code == by_mail.status_code == 200
        token, token2 = by_name.json()["access_token"], by_mail.json()["access_token"]
        assert by_name.json()["token_type"] == "bearer"
        assert dt.datetime.fromisoformat(by_name.json()["expiry"]).tzinfo is None
        bob = _zrc_login(client, "bob", "bobs password").json()["access_token"]
        secrets_seen += [token, token2, bob]
        profile = client.get("/users/ada/profile", headers=_auth(token))
        assert profile.status_code == 200
        assert {k: profile.json()[k] for k in ("username", "email", "first_name")} == {
            "username": "ada",
            "email": "ada@example.org",
            "first_name": "Ada",
        }
        assert "token" not in profile.json()
        assert client.get("/users/bob/profile", headers=_auth(token)).status_code == 403
        assert client.get("/users/ada/profile", headers=_auth(bob)).status_code == 403

        # Tampered, foreign-signed and expired (validly signed) session tokens are refused.
        claims = jwt.decode(token, options={"verify_signature": False})
        secret = settings.secret_key.get_secret_value()
        expired = jwt.encode({**claims, "exp": int(time.time()) - 10}, secret, ALGORITHM)
        foreign = jwt.encode(claims, "another secret " * 4, ALGORITHM)
        for bad in (_tamper(token), foreign, expired, token[:-2]):
            refused = client.get("/users/ada/profile", headers=_auth(bad))
            assert refused.status_code == 401 and refused.json()["detail"] == INVALID_TOKEN

        # Logout ends that token only.
        assert client.post("/auth/logout", headers=_auth(token)).status_code == 200
        assert client.get("/users/ada/profile", headers=_auth(token)).status_code == 401
        assert client.get("/users/ada/profile", headers=_auth(token2)).status_code == 200

        # Password reset from the mailed link: single use, ends every session.
        asked = client.post("/auth/password/reset", json={"email": "ada@example.org"})
        assert asked.json()["message"] == service.RESET_SENT
        reset_mail = wait_for_mail(_outbox(server), to="ada@example.org", page="reset")
        reset_token = reset_mail.token("reset")
        secrets_seen.append(reset_token)
        page = client.get(_path(reset_mail.link("reset")))
        assert page.status_code == 200 and 'name="token"' in page.text
        new = {"token": reset_token, "password": "second password 2"}
        assert client.post("/auth/password/update", json=new).status_code == 200
        assert client.post("/auth/password/update", json=new).status_code == 400
        assert client.get("/users/ada/profile", headers=_auth(token2)).status_code == 401
        assert _zrc_login(client, "ada", "first password 1").status_code == 401
        assert _zrc_login(client, "ada", "second password 2").status_code == 200

        # Expired one-time tokens (crafted in the server's database) are refused.
        db = Database(settings.database)
        try:
            expired_tokens = {}
            with db.transaction() as session:
                ada = session.scalar(select(User).where(User.username == "ada"))
                for purpose in (TokenPurpose.VERIFY, TokenPurpose.RESET):
                    raw, digest = new_one_time_token()
                    expired_tokens[purpose] = raw
                    session.add(
                        OneTimeToken(
                            user_id=ada.id,
                            purpose=purpose,
                            token_hash=digest,
                            created_at=utcnow() - dt.timedelta(hours=2),
                            expires_at=utcnow() - dt.timedelta(seconds=1),
                        )
                    )
        finally:
            db.dispose()
        late_verify = client.post("/auth/verify", json={"token": expired_tokens["verify"]})
        late_reset = client.post(
            "/auth/password/update",
            json={"token": expired_tokens["reset"], "password": "third password 3"},
        )
        for late in (late_verify, late_reset):
            assert late.status_code == 400 and late.json()["detail"] == service.INVALID_LINK

        # Bad input is a clear 4xx, never a 500.
        as_json = {"Content-Type": "application/json"}
        as_form = {"Content-Type": "application/x-www-form-urlencoded"}
        bad_requests = [
            client.post("/auth/signup", content=b"{oops", headers=as_json),
            client.post("/auth/signup", json=_person("x" * 40)),
            client.post("/auth/signup", json={**_person("carl"), "affiliation": "a" * 5000}),
            client.post("/auth/login", data={"username": "ada"}),
            client.post("/auth/login", json={"username": "ada", "password": "x"}),
            client.post(
                "/page/signup",
                content=b"\xff\xfe=%%%&csrf_token=" + csrf_token(client, "/page/signup").encode(),
                headers=as_form,
            ),
            # Control characters in bodies, paths and queries (security.inputs).
            client.post("/auth/signup", json={**_person("dan"), "first_name": "D\x1b[2J\nx"}),
            client.post("/auth/login", data={"username": "ada\x00", "password": "x"}),
            client.get("/users/ada%00/profile", headers=_auth(token2)),
            client.get("/page/verify?token=a%00b"),
        ]
        for response in bad_requests:
            assert response.status_code == 400, response.text
            if response.headers["content-type"].startswith("application/json"):
                assert isinstance(response.json()["detail"], str)
        unknown = _zrc_login(client, "nobody", "whatever 123")
        assert unknown.status_code == 401 and unknown.json()["detail"] == service.BAD_CREDENTIALS

    server.stop()
    log = server.process.output()
    assert "/auth/login" in log and "/page/verify?token=[redacted]" in log
    for secret_value in secrets_seen:
        assert secret_value not in log
    assert "Traceback" not in log and '" 500' not in log


def _pid_of(server: Server, request_id: str, timeout: float = 10) -> int:
    """The worker pid that logged the request (polls: the log line lands asynchronously)."""
    pattern = re.compile(rf"\[(\d+)\] uvicorn\.access rid={re.escape(request_id)} ")
    match = wait_for(
        lambda: pattern.search(server.process.output()),
        timeout=timeout,
        what=f"request {request_id} in the log",
    )
    return int(match.group(1))


def _pinned_clients(server: Server, per_worker: int = 1, workers: int = 2) -> list[httpx.Client]:
    """Keep-alive connections, `per_worker` on each worker (the access log says which served a
    request): requests sent over them are known to reach every worker."""
    by_pid: dict[int, list[httpx.Client]] = {}
    for _ in range(100 * per_worker):
        client = server.client(limits=httpx.Limits(max_connections=1))
        rid = uuid.uuid4().hex
        client.get("/", headers={"X-Request-ID": rid})
        pinned = by_pid.setdefault(_pid_of(server, rid), [])
        if len(pinned) < per_worker:
            pinned.append(client)
        else:
            client.close()
        if len(by_pid) == workers and all(len(c) == per_worker for c in by_pid.values()):
            return [c for clients in by_pid.values() for c in clients]
    raise AssertionError(f"could not reach {workers} different workers")


def test_login_throttle_is_shared_by_the_workers(make_server: Callable[..., Server]) -> None:
    server = make_server(
        workers=2,
        env={
            "ZR_LOGIN_MAX_FAILURES_ACCOUNT": "4",
            "ZR_LOGIN_MAX_FAILURES_ADDRESS": "8",
            "ZR_KEEPALIVE": "60",
        },
    )
    one, two = _pinned_clients(server)
    try:
        _signup_and_verify(one, server, "dora", password="doras password")
        _signup_and_verify(one, server, "emil", password="emils password")
        # Per account: 4 failures spread over both workers, then 429 on either, even with the
        # right password.
        for client in (one, two, one, two):
            assert _zrc_login(client, "dora", "bad guess!").status_code == 401
        for client in (one, two):
            locked = _zrc_login(client, "dora@example.org", "doras password")
            assert locked.status_code == 429
            assert locked.json()["detail"].startswith(ratelimit.ACCOUNT_LOCKED)
            assert 0 < int(locked.headers["Retry-After"]) <= 300
        # Per address: 4 more failures on other (unknown) names reach the address limit of 8.
        for n, client in enumerate((two, one, two, one)):
            assert _zrc_login(client, f"ghost{n}", "bad guess!").status_code == 401
        blocked = _zrc_login(two, "emil", "emils password")
        assert blocked.status_code == 429
        assert blocked.json()["detail"].startswith(ratelimit.ADDRESS_LOCKED)
        assert int(blocked.headers["Retry-After"]) > 0
    finally:
        one.close()
        two.close()


def test_concurrent_signups_on_two_workers(make_server: Callable[..., Server]) -> None:
    # 31 sign-ups from one address: above the default per-address sign-up limit.
    server = make_server(workers=2, env={"ZR_KEEPALIVE": "60", "ZR_SIGNUP_MAX_PER_ADDRESS": "100"})
    clients = _pinned_clients(server, per_worker=3)  # 6 connections, 3 on each worker

    def signups(n: int) -> list[int]:
        names = [f"user{n}x{i}" for i in range(5)] + ["twin"]
        return [clients[n].post("/auth/signup", json=_person(name)).status_code for name in names]

    try:
        with ThreadPoolExecutor(max_workers=len(clients)) as pool:
            results = list(pool.map(signups, range(len(clients))))
    finally:
        for client in clients:
            client.close()
    assert [r[:5] for r in results] == [[200] * 5] * len(clients)
    twins = sorted(r[5] for r in results)
    assert twins == [200] + [409] * (len(clients) - 1)  # one wins, the others are told why
    db = Database(load_settings(server.env_file).database)
    try:
        with db.transaction(read_only=True) as session:
            assert session.scalar(select(func.count()).select_from(User)) == 5 * len(clients) + 1
    finally:
        db.dispose()
    server.stop()
    log = server.process.output()
    assert "database is locked" not in log and "Traceback" not in log
