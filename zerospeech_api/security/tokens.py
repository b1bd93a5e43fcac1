"""Session JWTs (sub, exp, iat, jti) and one-time tokens stored as SHA-256 digests."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

ALGORITHM = "HS256"
ISSUER = "zerospeech-api"


class InvalidToken(Exception):
    """The token is malformed, tampered with or expired."""


@dataclass(frozen=True)
class TokenClaims:
    username: str
    jti: str
    expires_at: dt.datetime


def issue_session_token(
    *, secret: str, username: str, lifetime: dt.timedelta, now: dt.datetime
) -> tuple[str, TokenClaims]:
    """A signed bearer token and its claims; `jti` names the server-side session row."""
    import jwt  # here, not at the top: a server start needs no token until the first login

    claims = TokenClaims(username=username, jti=secrets.token_hex(16), expires_at=now + lifetime)
    token = jwt.encode(
        {
            "sub": username,
            "jti": claims.jti,
            "iat": int(now.timestamp()),
            "exp": int(claims.expires_at.timestamp()),
            "iss": ISSUER,
        },
        secret,
        algorithm=ALGORITHM,
    )
    return token, claims


def decode_session_token(*, secret: str, token: str) -> TokenClaims:
    """Verified claims of a session token, or `InvalidToken`."""
    import jwt  # see issue_session_token

    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["sub", "exp", "jti", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    sub, jti = payload.get("sub"), payload.get("jti")
    if not isinstance(sub, str) or not isinstance(jti, str):
        raise InvalidToken("malformed claims")
    return TokenClaims(
        username=sub, jti=jti, expires_at=dt.datetime.fromtimestamp(payload["exp"], dt.UTC)
    )


def new_one_time_token() -> tuple[str, str]:
    """A random URL-safe token and the digest to store in its place."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> str:
    """SHA-256 hex of a one-time token (tokens are high-entropy: no salt or slow hash needed)."""
    return hashlib.sha256(token.encode()).hexdigest()
