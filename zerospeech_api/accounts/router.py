"""HTTP routes of accounts (thin: parse, call one service function, return a schema).

Signing up, logging in and the password links are on `public`; the rest needs a caller.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request

from zerospeech_api.accounts import service
from zerospeech_api.accounts.deps import PathUser
from zerospeech_api.accounts.schemas import (
    EmailRequest,
    LoginForm,
    LoginResponse,
    Message,
    PasswordUpdate,
    Profile,
    ProfileUpdate,
    SignupRequest,
    SignupResponse,
    VerifyRequest,
)
from zerospeech_api.deps import (
    AUTHENTICATED,
    CallerDep,
    ClientAddressDep,
    DatabaseDep,
    DatabaseRoute,
    MailerDep,
    PublicRoute,
    SessionDep,
    SettingsDep,
    TokenDep,
)
from zerospeech_api.errors import BadRequest

router = APIRouter(tags=["accounts"], route_class=DatabaseRoute, dependencies=AUTHENTICATED)
public = APIRouter(tags=["accounts"], route_class=PublicRoute)

LOGIN_NEEDS_FORM = (
    "send the login as a form (Content-Type: application/x-www-form-urlencoded) with the fields "
    "username and password, as the OAuth2 password flow and the zrc client do (this request "
    "sent {sent})"
)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")


def require_form(request: Request) -> None:
    """400 saying what to send when the body is not a form (JSON is the usual mistake)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in FORM_TYPES:
        # Echo the type only when it looks like one: header text is the sender's.
        sent = media_type if _MEDIA_TYPE.fullmatch(media_type) else "no usable Content-Type"
        raise BadRequest(LOGIN_NEEDS_FORM.format(sent=sent))


@public.post("/auth/signup")
def signup(
    body: SignupRequest,
    mailer: MailerDep,
    db: DatabaseDep,
    settings: SettingsDep,
    address: ClientAddressDep,
) -> SignupResponse:
    """Create an account and mail a verification link; the account can log in once verified.

    409 when the username or e-mail address is taken (in any letter case), 429 with
    Retry-After past the sign-ups allowed per client address."""
    user = service.signup(
        db=db, settings=settings, mailer=mailer, data=body, client_address=address
    )
    return SignupResponse(
        username=user.username,
        email=user.email,
        verified=user.verified,
        message=service.SIGNUP_DONE,
    )


@public.post("/auth/verify")
def verify(body: VerifyRequest, session: SessionDep) -> Message:
    """Verify an e-mail address with the token from the verification link (works once)."""
    service.verify_email(session=session, token=body.token)
    return Message(message=service.VERIFIED)


@public.post("/auth/verify/resend")
def resend_verification(
    body: EmailRequest,
    mailer: MailerDep,
    db: DatabaseDep,
    settings: SettingsDep,
    address: ClientAddressDep,
) -> Message:
    """Mail a new verification link; the answer is the same whether or not the account exists."""
    service.resend_verification(
        db=db,
        settings=settings,
        mailer=mailer,
        email=body.email,
        client_address=address,
    )
    return Message(message=service.VERIFY_SENT)


@public.post("/auth/login", dependencies=[Depends(require_form)])
def login(
    form: Annotated[LoginForm, Form()],
    db: DatabaseDep,
    settings: SettingsDep,
    address: ClientAddressDep,
) -> LoginResponse:
    """OAuth2 password login (the zrc client's form): `username` may be a username or an e-mail.

    401 on wrong credentials, 403 for unverified or deactivated accounts, 429 with Retry-After
    after too many failures for the account or from the address."""
    result = service.login(
        db=db,
        settings=settings,
        identifier=form.username,
        password=form.password,
        client_address=address,
    )
    return LoginResponse.build(
        username=result.username, token=result.token, expires_at=result.expires_at
    )


@router.post("/auth/logout")
def logout(caller: CallerDep, session: SessionDep) -> Message:
    """End the session of the bearer token at once."""
    service.logout(session=session, jti=caller.jti)
    return Message(message=service.LOGGED_OUT)


@public.post("/auth/password/reset")
def request_password_reset(
    body: EmailRequest,
    mailer: MailerDep,
    db: DatabaseDep,
    settings: SettingsDep,
    address: ClientAddressDep,
) -> Message:
    """Mail a password reset link; neither the answer nor its timing reveals whether the
    account exists. Only the newest link works, and only until the password changes."""
    service.request_password_reset(
        db=db,
        settings=settings,
        mailer=mailer,
        email=body.email,
        client_address=address,
    )
    return Message(message=service.RESET_SENT)


@public.post("/auth/password/update")
def update_password(
    body: PasswordUpdate,
    db: DatabaseDep,
    settings: SettingsDep,
    bearer: TokenDep,
    address: ClientAddressDep,
) -> Message:
    """Set a new password with `token` from a reset mail, or with a bearer token and
    `old_password`. Either way every session of the user ends."""
    if body.token is not None:
        service.reset_password(db=db, settings=settings, token=body.token, password=body.password)
    elif bearer and body.old_password is not None:
        service.change_password(
            db=db,
            settings=settings,
            bearer=bearer,
            old_password=body.old_password,
            password=body.password,
            client_address=address,
        )
    else:
        raise BadRequest(service.PASSWORD_UPDATE_NEEDS)
    return Message(message=service.PASSWORD_CHANGED)


@router.get("/users/{username}/profile")
def get_profile(target: PathUser) -> Profile:
    """A user's profile: their own, or anyone's for an admin (403 otherwise)."""
    return Profile.model_validate(target)


@router.put("/users/{username}/profile")
@router.patch("/users/{username}/profile")
def update_profile(body: ProfileUpdate, target: PathUser, session: SessionDep) -> Profile:
    """Change first name, last name or affiliation (self, or an admin)."""
    updated = service.update_profile(session=session, username=target.username, changes=body)
    return Profile.model_validate(updated)
