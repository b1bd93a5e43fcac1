"""The participant's pages: log in and out with a session cookie, and /page/me.

The cookie holds a bearer token of the API's own server-side sessions: the same login service
(and so the same throttle) as `/auth/login`, ended by logout, a password change or
deactivation like any token. Every form carries a CSRF token (pages/csrf.py). These pages are
personal: `no-store`, never cached by nginx, and each shows only the caller's own data.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from zerospeech_api.accounts import service as accounts
from zerospeech_api.benchmarks import service as benchmarks
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Submission, SubmissionStatus, User, utcnow
from zerospeech_api.deps import ClientAddressDep, DatabaseDep, PublicRoute, SettingsDep
from zerospeech_api.errors import DomainError
from zerospeech_api.evaluation import queue
from zerospeech_api.evaluation import view as evaluation
from zerospeech_api.leaderboards.definition import format_number, numeric_keys
from zerospeech_api.leaderboards.service import dotted_get
from zerospeech_api.models import service as models
from zerospeech_api.pages import csrf
from zerospeech_api.pages.render import error_page, form_page
from zerospeech_api.security.sessions import authenticate
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import service as submissions

# No bearer token on pages: /page/me and its actions check the session cookie themselves
# (`page_user`) and send anyone without one to the login form.
router = APIRouter(
    prefix="/page",
    include_in_schema=False,
    dependencies=[Depends(csrf.require_csrf)],
    route_class=PublicRoute,
)

Field = Annotated[str, Form()]
# The newest submissions shown, each with the end of its log.
MAX_SHOWN = 50
LOG_TAIL_BYTES = 4096
NOTICES = {
    "cancelled": "The submission is cancelled; it no longer counts toward your quota.",
    "deleted": "The submission and its files are deleted.",
    "out": "You are logged out.",
}
TITLE = "My submissions"


def page_user(request: Request, db: Database, settings: Settings) -> tuple[User, str] | None:
    """The logged-in user and session id of the browser's cookie, None without a valid one."""
    token = request.cookies.get(csrf.SESSION_COOKIE)
    if not token:
        return None
    with db.session(read_only=True) as session:
        try:
            user, jti = authenticate(session=session, settings=settings, token=token)
        except DomainError:
            return None
        session.expunge(user)
        return user, jti


def to_login() -> RedirectResponse:
    return RedirectResponse("/page/login", status_code=303)


def back_to_me(notice: str, anchor: str = "") -> RedirectResponse:
    return RedirectResponse(f"/page/me?notice={notice}{anchor}", status_code=303)


# --- log in, log out --------------------------------------------------------------------------


@router.get("/login")
def login_form(
    request: Request, db: DatabaseDep, settings: SettingsDep, notice: str = ""
) -> Response:
    """The login form (already logged in: straight to /page/me)."""
    if page_user(request, db, settings) is not None:
        return RedirectResponse("/page/me", status_code=303)
    return form_page(request, "pages/login.html", title="Log in", notice=NOTICES.get(notice))


@router.post("/login")
def login_submit(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    address: ClientAddressDep,
    username: Field = "",
    password: Field = "",
) -> Response:
    """Check the credentials as /auth/login does (same throttle), then set the session cookie."""
    try:
        result = accounts.login(
            db=db,
            settings=settings,
            identifier=username[:254],
            password=password[:1024],
            client_address=address,
        )
    except DomainError as exc:
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "retry-after"}
        return form_page(
            request,
            "pages/login.html",
            title="Log in",
            status_code=exc.status,
            headers=headers,
            errors=[exc.detail],
            username=username[:254],
        )
    response = RedirectResponse("/page/me", status_code=303)
    lifetime = (result.expires_at - utcnow()).total_seconds()
    csrf.set_session(response, settings, result.token, max_age=int(lifetime))
    return response


@router.post("/logout")
def logout(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    """End the server-side session now and forget the cookie."""
    caller = page_user(request, db, settings)
    if caller is not None:
        with db.transaction() as session:
            accounts.logout(session=session, jti=caller[1])
    response = RedirectResponse("/page/login?notice=out", status_code=303)
    csrf.clear_session(response, settings)
    return response


# --- the participant's page -------------------------------------------------------------------


def _scores(
    session: Session, settings: Settings, submission: Submission, user: User
) -> dict[str, Any]:
    try:
        found = evaluation.submission_scores(
            session=session, settings=settings, submission_id=submission.id, user=user
        )
    except DomainError:
        return {"numbers": [], "leaderboards": []}
    entry = found.get("entry") or {}
    return {
        "numbers": [
            (key.removeprefix("scores."), format_number(dotted_get(entry, key)))
            for key in numeric_keys(entry.get("scores"), "scores")
        ],
        "leaderboards": found.get("leaderboards", []),
    }


def _card(
    session: Any,
    settings: Settings,
    submission: Submission,
    user: User,
    spot: queue.QueueSpot | None,
) -> dict[str, Any]:
    log = evaluation.submission_log(
        session=session, settings=settings, submission=submission, tail_bytes=LOG_TAIL_BYTES
    )
    changes = [e for e in log["events"] if e["status"]]
    since = dt.datetime.fromisoformat(changes[-1]["at"]) if changes else submission.updated_at
    status = submission.status
    return {
        "id": submission.id,
        "model_id": submission.model_id,
        "benchmark_id": submission.benchmark_id,
        "benchmark_label": submission.benchmark.label,
        "auto_eval": submission.benchmark.auto_eval,
        "status": status,
        "since": since,
        "created_at": submission.created_at,
        "parts": len(submission.parts),
        "parts_received": sum(p.received_at is not None for p in submission.parts),
        "spot": spot,
        "events": log["events"][-8:],
        "log": log["log"],
        "log_truncated": log["log_truncated"],
        "scores": _scores(session, settings, submission, user)
        if status == SubmissionStatus.COMPLETED
        else None,
        "can_cancel": status in queue.CANCELLABLE,
        "can_delete": user.admin or status in submissions.OWNER_MAY_DELETE,
    }


def me_context(db: Database, settings: Settings, user_id: int) -> dict[str, Any]:
    """Everything /page/me shows, read in one read-only session."""
    now = utcnow()
    with db.session(read_only=True) as session:
        user = session.get(User, user_id)
        assert user is not None  # authenticated a moment ago; a deleted user has no session
        found = submissions.list_submissions(session=session, user=user, with_parts=True)
        shown = found[:MAX_SHOWN]
        spots = queue.queue_spots(
            session=session,
            submission_ids=[s.id for s in shown if s.status == SubmissionStatus.QUEUED],
            now=now,
        )
        counts: dict[str, int] = {}
        for s in found:
            counts[s.model_id] = counts.get(s.model_id, 0) + 1
        return {
            "user": {"username": user.username, "first_name": user.first_name},
            "now": now,
            "quotas": benchmarks.user_quotas(session=session, user=user, now=now),
            "format_period": benchmarks.format_period,
            "models": [
                {
                    "id": m.id,
                    "description": m.description,
                    "registered_at": m.registered_at,
                    "public": models.is_published(session=session, model_id=m.id),
                    "submissions": counts.get(m.id, 0),
                }
                for m in models.list_user_models(session=session, user=user)
            ],
            "cards": [_card(session, settings, s, user, spots.get(s.id)) for s in shown],
            "hidden": len(found) - len(shown),
        }


@router.get("/me")
def me(request: Request, db: DatabaseDep, settings: SettingsDep, notice: str = "") -> Response:
    """The caller's submissions (newest first), their status, queue place and log, the quota on
    each open benchmark, and the caller's models."""
    caller = page_user(request, db, settings)
    if caller is None:
        return to_login()
    context = me_context(db, settings, caller[0].id)
    return form_page(request, "pages/me.html", title=TITLE, notice=NOTICES.get(notice), **context)


def _act(
    request: Request, db: Database, settings: Settings, submission_id: str, action: str
) -> Response:
    """Cancel or delete a submission of the caller (admins: anyone's), then back to /page/me."""
    caller = page_user(request, db, settings)
    if caller is None:
        return to_login()
    user = caller[0]
    try:
        if action == "cancel":
            with db.transaction() as session:
                submission = submissions.owned_submission(
                    session=session, submission_id=submission_id, user=user
                )
                queue.cancel_submission(session=session, submission=submission, by=user)
            return back_to_me("cancelled", f"#sub-{submission_id}")
        with db.session() as session:
            submission = submissions.owned_submission(
                session=session, submission_id=submission_id, user=user
            )
            submissions.delete_submission(
                session=session, settings=settings, submission=submission, by_admin=user.admin
            )
        return back_to_me("deleted")
    except DomainError as exc:
        return error_page(request, exc.status, exc.detail)


@router.post("/me/submissions/{submission_id}/cancel")
def cancel(
    submission_id: str, request: Request, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """The cancel button: a queued evaluation is dropped, a running one stopped."""
    return _act(request, db, settings, submission_id, "cancel")


@router.post("/me/submissions/{submission_id}/delete")
def delete(
    submission_id: str, request: Request, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """The delete button (owners: while uploading, failed, invalid or cancelled)."""
    return _act(request, db, settings, submission_id, "delete")
