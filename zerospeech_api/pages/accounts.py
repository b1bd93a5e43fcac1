"""HTML pages under /page/ for sign-up, e-mail verification and password reset (jinja2, no JS).

Forms post back to the same pages; every value is autoescaped. Wrong input re-renders the form
with a 400 and the reasons; the pages call the same service functions as the JSON API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from zerospeech_api.accounts import service
from zerospeech_api.accounts.schemas import (
    MAX_AFFILIATION_LENGTH,
    MAX_NAME_LENGTH,
    MAX_TOKEN_LENGTH,
    EmailRequest,
    SignupRequest,
)
from zerospeech_api.deps import (
    ClientAddressDep,
    DatabaseDep,
    MailerDep,
    PublicRoute,
    SettingsDep,
)
from zerospeech_api.errors import READ_ONLY_DETAIL, DomainError, validation_lines
from zerospeech_api.pages.csrf import require_csrf
from zerospeech_api.pages.render import form_page
from zerospeech_api.security.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

PASSWORDS_DIFFER = "the two passwords differ"
SIGNUP_PAGE_DONE = (
    "Your account is created. We sent a link to your e-mail address: open it to verify the "
    "address, then log in (with the zrc client: zrc user login)."
)
RESET_DONE = "Your password is changed and every session has ended: log in again."

# Every form posted here must carry the CSRF token its page was rendered with.
router = APIRouter(
    prefix="/page",
    include_in_schema=False,
    route_class=PublicRoute,
    dependencies=[Depends(require_csrf)],
)

Field = Annotated[str, Form()]


def render(
    request: Request, name: str, *, title: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return form_page(
        request,
        name,
        title=title,
        status_code=status_code,
        min_password=MIN_PASSWORD_LENGTH,
        max_password=MAX_PASSWORD_LENGTH,
        max_name=MAX_NAME_LENGTH,
        max_affiliation=MAX_AFFILIATION_LENGTH,
        **context,
    )


def message(
    request: Request,
    *,
    title: str,
    text: str,
    success: bool,
    status_code: int = 200,
    links: list[tuple[str, str]] | None = None,
) -> HTMLResponse:
    return render(
        request,
        "accounts/message.html",
        title=title,
        message=text,
        success=success,
        status_code=status_code,
        links=links or [],
    )


@router.get("/signup")
def signup_form(request: Request) -> HTMLResponse:
    return render(request, "accounts/signup.html", title="Sign up", form={})


@router.post("/signup")
def signup_submit(
    request: Request,
    mailer: MailerDep,
    db: DatabaseDep,
    settings: SettingsDep,
    address: ClientAddressDep,
    username: Field = "",
    email: Field = "",
    first_name: Field = "",
    last_name: Field = "",
    affiliation: Field = "",
    password: Field = "",
) -> HTMLResponse:
    form = {
        "username": username,
        "email": email,
        "first_name": first_name,
        "last_name": last_name,
        "affiliation": affiliation,
    }
    try:
        data = SignupRequest(**form, password=password)
        service.signup(db=db, settings=settings, mailer=mailer, data=data, client_address=address)
    except ValidationError as exc:
        errors = validation_lines(exc.errors(), words=True)
    except DomainError as exc:
        errors = [exc.detail]
    else:
        return message(request, title="Check your mail", text=SIGNUP_PAGE_DONE, success=True)
    return render(
        request,
        "accounts/signup.html",
        title="Sign up",
        form=form,
        errors=errors,
        status_code=400,
    )


@router.get("/verify")
def verify(
    request: Request, db: DatabaseDep, settings: SettingsDep, token: str = ""
) -> HTMLResponse:
    """With ?token= from the mail, verifies at once; without, a form to paste it or resend."""
    if not token:
        return render(request, "accounts/verify.html", title="Verify your e-mail address")
    if request.app.state.read_only.active:  # a GET that writes: the middleware lets it pass
        return message(
            request, title="Try later", text=READ_ONLY_DETAIL, success=False, status_code=423
        )
    try:
        with db.transaction() as session:
            service.verify_email(session=session, token=token[:MAX_TOKEN_LENGTH])
    except DomainError as exc:
        return message(
            request,
            title="Verification failed",
            text=exc.detail,
            success=False,
            status_code=exc.status,
            links=[("Ask for a new link", "/page/verify")],
        )
    return message(request, title="E-mail address verified", text=service.VERIFIED, success=True)


def ask_for_mail(
    request: Request,
    email: str,
    *,
    form: str,
    title: str,
    send: Callable[..., None],
    sent: str,
    **deps: Any,
) -> HTMLResponse:
    """The two "mail me a link" forms: check the address, call the service, say it was sent
    (whether or not an account has that address)."""
    try:
        data = EmailRequest(email=email)
    except ValidationError as exc:
        errors = validation_lines(exc.errors(), words=True)
        return render(request, form, title=title, errors=errors, status_code=400)
    send(email=data.email, **deps)
    return message(request, title="Check your mail", text=sent, success=True)


@router.post("/verify/resend")
def verify_resend(
    request: Request,
    mailer: MailerDep,
    db: DatabaseDep,
    settings: SettingsDep,
    address: ClientAddressDep,
    email: Field = "",
) -> HTMLResponse:
    return ask_for_mail(
        request,
        email,
        form="accounts/verify.html",
        title="Verify your e-mail address",
        send=service.resend_verification,
        sent=service.VERIFY_SENT,
        mailer=mailer,
        db=db,
        settings=settings,
        client_address=address,
    )


@router.get("/reset")
def reset_form(request: Request, token: str = "") -> HTMLResponse:
    """With ?token= from the mail, the new-password form; without, the form to ask for a link."""
    if token:
        return render(request, "accounts/reset.html", title="Choose a new password", token=token)
    return render(request, "accounts/reset_request.html", title="Reset your password")


@router.post("/reset/request")
def reset_request(
    request: Request,
    mailer: MailerDep,
    db: DatabaseDep,
    settings: SettingsDep,
    address: ClientAddressDep,
    email: Field = "",
) -> HTMLResponse:
    return ask_for_mail(
        request,
        email,
        form="accounts/reset_request.html",
        title="Reset your password",
        send=service.request_password_reset,
        sent=service.RESET_SENT,
        mailer=mailer,
        db=db,
        settings=settings,
        client_address=address,
    )


@router.post("/reset")
def reset_submit(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    token: Field = "",
    password: Field = "",
    confirm: Field = "",
) -> HTMLResponse:
    errors: list[str] = []
    if password != confirm:
        errors = [PASSWORDS_DIFFER]
    elif not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        errors = [f"password: {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"]
    else:
        try:
            service.reset_password(
                db=db, settings=settings, token=token[:MAX_TOKEN_LENGTH], password=password
            )
        except DomainError as exc:
            return message(
                request,
                title="Reset failed",
                text=exc.detail,
                success=False,
                status_code=exc.status,
                links=[("Ask for a new link", "/page/reset")],
            )
        return message(request, title="Password changed", text=RESET_DONE, success=True)
    return render(
        request,
        "accounts/reset.html",
        title="Choose a new password",
        token=token,
        errors=errors,
        status_code=400,
    )
