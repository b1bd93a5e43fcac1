"""Request and response shapes of accounts: the zrc contract's login and profile, and the rest."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    NaiveDatetime,
    StringConstraints,
    model_validator,
)

from zerospeech_api.db.keys import name_key
from zerospeech_api.security.inputs import ONE_LINE
from zerospeech_api.security.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

USERNAME_PATTERN = r"^[A-Za-z0-9_-]{3,32}$"
MAX_NAME_LENGTH = 100  # users.first_name / last_name columns
MAX_AFFILIATION_LENGTH = 200  # users.affiliation column
MAX_EMAIL_LENGTH = 254
MAX_TOKEN_LENGTH = 200

USERNAME_RULE = "a username is 3 to 32 letters, digits, _ or -"
EMAIL_TOO_LONG = f"the e-mail address is longer than {MAX_EMAIL_LENGTH} characters once normalised"


def _check_username(value: str) -> str:
    if not re.fullmatch(USERNAME_PATTERN, value):
        raise ValueError(USERNAME_RULE)
    return value


Username = Annotated[
    str,
    AfterValidator(_check_username),
    Field(
        max_length=64,  # refuse huge values before the pattern runs
        description="3 to 32 letters, digits, `_` or `-`.",
        examples=["ada_l"],
        json_schema_extra={"pattern": USERNAME_PATTERN},
    ),
]


def _check_email_key(value: str) -> str:
    # Uniqueness is on name_key(), which may be longer (NFKC expands some characters).
    if len(name_key(value)) > MAX_EMAIL_LENGTH:
        raise ValueError(EMAIL_TOO_LONG)
    return value


Email = Annotated[
    EmailStr,
    Field(max_length=MAX_EMAIL_LENGTH, examples=["ada@example.org"]),
    AfterValidator(_check_email_key),
]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME_LENGTH),
    ONE_LINE,
]
Affiliation = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_AFFILIATION_LENGTH),
    ONE_LINE,
]
Password = Annotated[
    str,
    Field(
        min_length=MIN_PASSWORD_LENGTH,
        max_length=MAX_PASSWORD_LENGTH,
        description=f"{MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters.",
    ),
]
OneTimeToken = Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_LENGTH), ONE_LINE]


class Strict(BaseModel):
    """Request bodies: unknown keys are an error, so typos are not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class SignupRequest(Strict):
    username: Username
    email: Email
    first_name: Name
    last_name: Name
    affiliation: Affiliation
    password: Password


class SignupResponse(BaseModel):
    username: str
    email: str
    verified: bool
    message: str


class Message(BaseModel):
    """A success answer with a sentence for people (every 200 carries a JSON object)."""

    message: str


class VerifyRequest(Strict):
    token: OneTimeToken


class EmailRequest(Strict):
    email: Email


class LoginForm(BaseModel):
    """The OAuth2 password form the zrc client sends; `client_id`/`client_secret` are ignored."""

    grant_type: Annotated[str | None, Field(pattern="^password$")] = None
    username: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_EMAIL_LENGTH,
            description="A username or an e-mail address (case-insensitive).",
        ),
        ONE_LINE,
    ]
    password: Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)]
    scope: str = ""
    client_id: str | None = None
    client_secret: str | None = None


class LoginResponse(BaseModel):
    """The contract's login answer; `expiry` is a naive UTC datetime (an aware one crashes zrc)."""

    username: str
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expiry: NaiveDatetime = Field(description="Token expiry in UTC, ISO format without offset.")

    @classmethod
    def build(cls, *, username: str, token: str, expires_at: dt.datetime) -> LoginResponse:
        naive = expires_at.astimezone(dt.UTC).replace(tzinfo=None, microsecond=0)
        return cls(username=username, access_token=token, expiry=naive)


class PasswordUpdate(Strict):
    """Either `token` (from a reset mail) or, with a bearer token, `old_password`."""

    password: Password
    token: OneTimeToken | None = None
    old_password: Annotated[str | None, Field(max_length=MAX_PASSWORD_LENGTH)] = None

    @model_validator(mode="after")
    def _one_way(self) -> PasswordUpdate:
        if self.token is not None and self.old_password is not None:
            raise ValueError("send either token or old_password, not both")
        return self


class Profile(BaseModel):
    """A user's profile (never a field named `token`: zrc passes it as keyword arguments)."""

    model_config = ConfigDict(from_attributes=True)

    username: str
    email: str
    first_name: str
    last_name: str
    affiliation: str
    verified: bool
    created_at: dt.datetime


class ProfileUpdate(Strict):
    """Fields to change; absent ones are kept. The e-mail and username cannot change here."""

    first_name: Name | None = None
    last_name: Name | None = None
    affiliation: Affiliation | None = None

    @model_validator(mode="after")
    def _something(self) -> ProfileUpdate:
        if not self.model_fields_set:
            raise ValueError("nothing to change: send first_name, last_name or affiliation")
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self
