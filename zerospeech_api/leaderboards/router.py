"""Public leaderboard reads: JSON, CSV, one entry, lists; cacheable with ETag / 304."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from zerospeech_api.deps import PublicRoute, SessionDep, public
from zerospeech_api.leaderboards import service
from zerospeech_api.leaderboards.cache import LeaderboardCache, encode, etag_of
from zerospeech_api.leaderboards.schemas import (
    LeaderboardDocument,
    LeaderboardInfo,
    LeaderboardList,
)

router = APIRouter(tags=["leaderboards"], route_class=PublicRoute)

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified (the `If-None-Match` ETag is current)"}
}


def leaderboard_cache(request: Request) -> LeaderboardCache:
    """This app's cache of compiled leaderboards (made by create_app)."""
    cache: LeaderboardCache = request.app.state.leaderboard_cache
    return cache


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def cached_response(request: Request, body: bytes, etag: str, media_type: str) -> Response:
    """200 with the body, or 304 when the client already has it; both cacheable publicly."""
    max_age = request.app.state.settings.leaderboard_max_age
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={max_age}"}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def _json_response(request: Request, value: dict[str, Any]) -> Response:
    body = encode(value)
    return cached_response(request, body, etag_of(body), "application/json")


# Fast path for the hot reads. These plain Starlette routes come first, so they answer
# `/json` and `/csv` without FastAPI's per-request dependency and validation machinery (a cached
# read is then about as cheap as a bare endpoint); the FastAPI routes of the same paths below run
# the same code and document the routes in /docs and /openapi.json.
async def _fast_json(request: Request) -> Response:
    return await leaderboard_json(request.path_params["label"], request)


async def _fast_csv(request: Request) -> Response:
    return await leaderboard_csv(request.path_params["label"], request)


router.add_route("/leaderboards/{label}/json", public(_fast_json), ["GET"], include_in_schema=False)
router.add_route("/leaderboards/{label}/csv", public(_fast_csv), ["GET"], include_in_schema=False)


@router.get(
    "/leaderboards/list",
    response_model=LeaderboardList,
    responses=NOT_MODIFIED,
)
def list_leaderboards(request: Request, session: SessionDep) -> Response:
    """Every public leaderboard: `{"leaderboards": [...]}`, as `/benchmarks/list` answers."""
    rows = service.list_leaderboards(session=session)
    return _json_response(request, LeaderboardList.of(rows).model_dump())


@router.get(
    "/benchmarks/{benchmark_id}/leaderboards/list",
    response_model=LeaderboardList,
    responses=NOT_MODIFIED,
)
def benchmark_leaderboards(benchmark_id: str, request: Request, session: SessionDep) -> Response:
    """The public leaderboards of one benchmark (none for a private one such as test-challenge)."""
    rows = service.benchmark_leaderboards(session=session, benchmark_id=benchmark_id)
    return _json_response(request, LeaderboardList.of(rows).model_dump())


@router.get(
    "/leaderboards/{label}/info",
    response_model=LeaderboardInfo,
    responses=NOT_MODIFIED,
)
def leaderboard_info(label: str, request: Request, session: SessionDep) -> Response:
    """A leaderboard's definition, entry count and last change."""
    leaderboard, entries = service.counted_leaderboard(session=session, label=label)
    return _json_response(request, LeaderboardInfo.of(leaderboard, entries).model_dump())


@router.get(
    "/leaderboards/{label}/json",
    response_model=LeaderboardDocument,
    responses=NOT_MODIFIED,
)
async def leaderboard_json(label: str, request: Request) -> Response:
    """The compiled leaderboard `{"last_modified", "data": [ranked entries]}`."""
    compiled = await leaderboard_cache(request).compiled(label)
    return cached_response(request, compiled.body, compiled.etag, "application/json")


@router.get(
    "/leaderboards/{label}/csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}, **NOT_MODIFIED},
)
async def leaderboard_csv(label: str, request: Request) -> Response:
    """The ranked entries as RFC 4180 CSV, one column per dotted key (text a spreadsheet could
    run as a formula gets a leading `'`)."""
    compiled = await leaderboard_cache(request).compiled(label)
    body = await compiled.csv_off_loop()  # built once per version
    response = cached_response(request, body, compiled.csv_etag(), "text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{compiled.label}.csv"'
    return response


@router.get(
    "/leaderboards/{label}/entry/{entry_id}",
    response_model=dict,
    responses=NOT_MODIFIED,
)
async def leaderboard_entry(label: str, entry_id: str, request: Request) -> Response:
    """One ranked entry, by its submission id."""
    body = await leaderboard_cache(request).entry(label, entry_id)
    return cached_response(request, body, etag_of(body), "application/json")
