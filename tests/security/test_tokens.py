"""Session JWTs and one-time tokens: signed, expiring, tamper-evident, stored only as digests."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets

import jwt
import pytest

from zerospeech_api.security.tokens import (
    ALGORITHM,
    ISSUER,
    InvalidToken,
    decode_session_token,
    digest,
    issue_session_token,
    new_one_time_token,
)

SECRET = secrets.token_urlsafe(48)
NOW = dt.datetime.now(dt.UTC)


def _issue(lifetime: dt.timedelta = dt.timedelta(days=7), now: dt.datetime = NOW) -> str:
    token, _ = issue_session_token(secret=SECRET, username="ada", lifetime=lifetime, now=now)
    return token


def test_round_trip_gives_back_username_jti_and_expiry() -> None:
    token, claims = issue_session_token(
        secret=SECRET, username="ada", lifetime=dt.timedelta(days=7), now=NOW
    )
    decoded = decode_session_token(secret=SECRET, token=token)
    assert decoded.username == "ada"
    assert decoded.jti == claims.jti and len(claims.jti) == 32
    assert abs((decoded.expires_at - (NOW + dt.timedelta(days=7))).total_seconds()) < 1


def test_every_token_has_its_own_session_id() -> None:
    jtis = {decode_session_token(secret=SECRET, token=_issue()).jti for _ in range(20)}
    assert len(jtis) == 20


def test_expired_token_is_refused() -> None:
    token = _issue(lifetime=dt.timedelta(days=7), now=NOW - dt.timedelta(days=8))
    with pytest.raises(InvalidToken, match="expired"):
        decode_session_token(secret=SECRET, token=token)


def test_token_signed_with_another_secret_is_refused() -> None:
    token, _ = issue_session_token(
        secret=secrets.token_urlsafe(48), username="ada", lifetime=dt.timedelta(days=1), now=NOW
    )
    with pytest.raises(InvalidToken):
        decode_session_token(secret=SECRET, token=token)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_tampered_payload_is_refused() -> None:
    header, payload, signature = _issue().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "admin"
    with pytest.raises(InvalidToken):
        decode_session_token(secret=SECRET, token=f"{header}.{_b64(claims)}.{signature}")


def test_unsigned_alg_none_token_is_refused() -> None:
    claims = {"sub": "ada", "jti": "x" * 32, "exp": int(NOW.timestamp()) + 3600, "iss": ISSUER}
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(InvalidToken):
        decode_session_token(secret=SECRET, token=forged)


@pytest.mark.parametrize("missing", ["sub", "jti", "exp", "iss"])
def test_tokens_missing_a_claim_are_refused(missing: str) -> None:
    claims = {"sub": "ada", "jti": "x" * 32, "exp": int(NOW.timestamp()) + 3600, "iss": ISSUER}
    del claims[missing]
    with pytest.raises(InvalidToken):
        decode_session_token(secret=SECRET, token=jwt.encode(claims, SECRET, algorithm=ALGORITHM))


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "eyJ.eyJ.x", "Bearer xyz"])
def test_garbage_is_refused_not_crashing(garbage: str) -> None:
    with pytest.raises(InvalidToken):
        decode_session_token(secret=SECRET, token=garbage)


def test_one_time_tokens_are_random_and_stored_as_sha256() -> None:
    token, stored = new_one_time_token()
    other, _ = new_one_time_token()
    assert token != other and len(token) >= 40
    assert stored == digest(token) and len(stored) == 64
    assert token not in stored
