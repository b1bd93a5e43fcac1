"""Public pages: benchmarks, leaderboards (table, sort links, chart), published models.

They are the same for every visitor (no cookie is read or set), so they carry an ETag and the
JSON leaderboards' Cache-Control, and nginx caches them alike. A leaderboard page is rendered
once per compiled version of the leaderboard and sort order, then served from memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from zerospeech_api.benchmarks import service as benchmarks
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Benchmark, Leaderboard, Submission
from zerospeech_api.deps import DatabaseDep, PublicRoute, public
from zerospeech_api.errors import BadRequest, DomainError, NotFound
from zerospeech_api.leaderboards import service as leaderboards
from zerospeech_api.leaderboards.cache import etag_of
from zerospeech_api.leaderboards.definition import Column, cell, format_number, shown_columns
from zerospeech_api.leaderboards.router import leaderboard_cache
from zerospeech_api.models import service as models
from zerospeech_api.pages.chart import build_chart, parse_date
from zerospeech_api.pages.render import (
    STATIC_FILES,
    STATIC_PREFIX,
    cacheable,
    error_page,
    public_page,
    render,
    static_file,
)

router = APIRouter(prefix="/page", include_in_schema=False, route_class=PublicRoute)

BAD_SORT = "unknown sort column {sort!r}: sort by one of the table's column headers"
NOT_PUBLIC_MODEL = "no public model {id}: a model is shown once it is on a public leaderboard"
DESCRIPTION_CHARS = 160
# The fixed columns of a leaderboard table, before the score columns.
FIXED = ("rank", "model", "author", "date")


# --- index and benchmarks ---------------------------------------------------------------------


def _benchmark_view(benchmark: Benchmark, boards: list[tuple[Leaderboard, int]]) -> dict[str, Any]:
    reason = benchmarks.closed_reason(benchmark, on=benchmarks.today())
    return {
        "id": benchmark.id,
        "label": benchmark.label,
        "url": benchmark.url,
        "start_date": benchmark.start_date,
        "end_date": benchmark.end_date,
        "is_open": reason is None,
        "closed_reason": reason,
        "quota": benchmarks.format_quota(benchmark),
        "leaderboards": [
            {"label": lb.label, "entries": n, "archived": lb.archived, "updated_at": lb.updated_at}
            for lb, n in boards
            if lb.benchmark_id == benchmark.id
        ],
    }


def _index_context(db: Database) -> dict[str, Any]:
    with db.session(read_only=True) as session:
        boards = leaderboards.list_leaderboards(session=session)
        return {
            "benchmarks": [
                _benchmark_view(b, boards) for b in benchmarks.list_benchmarks(session=session)
            ]
        }


def _benchmark_context(db: Database, benchmark_id: str) -> dict[str, Any]:
    with db.session(read_only=True) as session:
        benchmark = benchmarks.get_benchmark(session=session, benchmark_id=benchmark_id)
        if benchmark.private:  # reachable by id in the API, never shown on the public site
            raise NotFound(benchmarks.NO_BENCHMARK.format(id=benchmark_id))
        boards = leaderboards.list_leaderboards(session=session, benchmark_id=benchmark.id)
        view = _benchmark_view(benchmark, boards)
        view["max_archive_bytes"] = benchmark.max_archive_bytes
        return {"benchmark": view}


async def _page(
    request: Request, build: Callable[[], dict[str, Any]], template: str, title: str
) -> Response:
    """Build a public page's context in the thread pool; a domain error is an HTML error page."""
    try:
        context = await run_in_threadpool(build)
    except DomainError as exc:
        return error_page(request, exc.status, exc.detail)
    return public_page(request, template, title=title.format(**context), **context)


@router.get("/")
async def index(request: Request, db: DatabaseDep) -> Response:
    """Every public benchmark, open or closed, with its dates and leaderboards."""
    return await _page(request, lambda: _index_context(db), "pages/index.html", "Benchmarks")


@router.get("/benchmarks/{benchmark_id}")
async def benchmark_page(benchmark_id: str, request: Request, db: DatabaseDep) -> Response:
    """One public benchmark: description link, dates, quota, leaderboards."""
    return await _page(
        request,
        lambda: _benchmark_context(db, benchmark_id),
        "pages/benchmark.html",
        "{benchmark[label]}",
    )


# --- leaderboards -----------------------------------------------------------------------------


def _sort_options(columns: list[Column], descending: bool) -> dict[str, str]:
    """Each sortable column and the order its header link asks for first."""
    best_first = "-" if descending else ""
    first = {"rank": "rank", "model": "model", "author": "author", "date": "-date"}
    return first | {c.key: f"{best_first}{c.key}" for c in columns}


def _sort_rows(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    """Rows ordered by one column (missing values last in either direction), rank breaks ties."""
    key = sort.lstrip("-")
    present = [r for r in rows if r["sort"][key] is not None]
    missing = [r for r in rows if r["sort"][key] is None]
    present.sort(key=lambda r: r["rank"])
    present.sort(key=lambda r: r["sort"][key], reverse=sort.startswith("-"))
    return present + missing


def _row(entry: dict[str, Any], columns: list[Column], public_models: set[str]) -> dict[str, Any]:
    model_id = entry.get("model_id")
    author = leaderboards.dotted_get(entry, "publication.author_short") or entry.get("submitted_by")
    text = entry.get("description")
    description = text if isinstance(text, str) else ""
    moment = parse_date(entry.get("submission_date"))
    return {
        "rank": entry.get("index"),
        "model_id": model_id,
        "model_public": isinstance(model_id, str) and model_id in public_models,
        "description": description,
        "short_description": description[:DESCRIPTION_CHARS]
        + ("…" if len(description) > DESCRIPTION_CHARS else ""),
        "author": author,
        "paper_url": leaderboards.dotted_get(entry, "publication.paper_url"),
        "code_url": leaderboards.dotted_get(entry, "publication.code"),
        "date": moment.date().isoformat() if moment else "",
        "cells": [cell(entry, c) for c in columns],
        "sort": {
            "rank": entry.get("index"),
            "model": str(model_id or "").lower() or None,
            "author": str(author or "").lower() or None,
            "date": moment,
            **{c.key: leaderboards.sort_value(entry, c.key) for c in columns},
        },
    }


def _published_models(db: Database, model_ids: set[str]) -> set[str]:
    """Which of these model ids are public models on this server (imported entries' are not)."""
    if not model_ids:
        return set()
    with db.session(read_only=True) as session:
        return set(
            session.scalars(
                select(Submission.model_id).where(
                    Submission.model_id.in_(model_ids), models.published_submission_clause()
                )
            ).all()
        )


def _leaderboard_page(request: Request, db: Database, label: str, body: bytes, sort: str) -> str:
    document = json.loads(body)  # the compiled leaderboard, exactly as /json serves it
    with db.session(read_only=True) as session:
        board = leaderboards.get_leaderboard(session=session, label=label)
        benchmark = {"id": board.benchmark_id, "label": board.benchmark.label}
        sort_key, descending = board.sort_key, board.descending
        info = {
            "label": board.label,
            "sort_key": sort_key,
            "descending": descending,
            "archived": board.archived,
        }
        entries = document["data"]
        columns = shown_columns(board, entries)
    options = _sort_options(columns, descending)
    if sort.lstrip("-") not in options:
        raise BadRequest(BAD_SORT.format(sort=sort[:100]))
    ids = {e["model_id"] for e in entries if isinstance(e.get("model_id"), str)}
    public_models = _published_models(db, ids)
    rows = _sort_rows([_row(e, columns, public_models) for e in entries], sort)
    ranked_by = next(c for c in columns if c.key == sort_key)
    chart = build_chart(
        entries,
        sort_key=sort_key,
        descending=descending,
        y_label=ranked_by.label,
        number_format=ranked_by.format,
    )
    headers = [
        {
            "key": key,
            "label": label_of,
            "numeric": key not in FIXED,
            "href": "?sort=" + (_flip(sort) if sort.lstrip("-") == key else options[key]),
            "aria_sort": ("descending" if sort.startswith("-") else "ascending")
            if sort.lstrip("-") == key
            else None,
        }
        for key, label_of in [
            ("rank", "#"),
            ("model", "Model"),
            ("author", "Authors"),
            ("date", "Date"),
            *((c.key, c.label) for c in columns),
        ]
    ]
    return render(
        request,
        "pages/leaderboard.html",
        title=f"{label} - {benchmark['label']}",
        board=info,
        benchmark=benchmark,
        ranked_by=ranked_by,
        headers=headers,
        rows=rows,
        sorted_key=sort.lstrip("-"),
        chart=chart,
        last_modified=parse_date(document["last_modified"]),
    )


def _flip(sort: str) -> str:
    return sort[1:] if sort.startswith("-") else f"-{sort}"


# Rendered leaderboard pages of a process: (label, sort) -> (version, body, ETag).
PageCache = dict[tuple[str, str], tuple[tuple[object, ...], bytes, str]]


def _page_cache(request: Request) -> PageCache:
    """This process's rendered leaderboard pages, made on first use."""
    state = request.app.state
    cache: PageCache | None = getattr(state, "page_cache", None)
    if cache is None:
        cache = state.page_cache = {}
    return cache


async def leaderboard_page(request: Request) -> Response:
    """The ranked table of a public leaderboard with its chart; `?sort=` orders the table."""
    label = request.path_params["label"]
    sort = request.query_params.get("sort") or "rank"
    try:
        compiled = await leaderboard_cache(request).compiled(label)
    except DomainError as exc:
        return error_page(request, exc.status, exc.detail)
    cache = _page_cache(request)
    hit = cache.get((label, sort))
    if hit is None or hit[0] != compiled.version:
        db = request.app.state.db
        try:
            text = await run_in_threadpool(
                _leaderboard_page, request, db, label, compiled.body, sort
            )
        except DomainError as exc:
            return error_page(request, exc.status, exc.detail)
        body = text.encode()
        # Only orders that exist are cached: the cache holds a few pages per leaderboard.
        hit = (compiled.version, body, etag_of(body))
        cache[(label, sort)] = hit
    return cacheable(request, hit[1], hit[2], "text/html; charset=utf-8")


# A plain Starlette route, as the JSON reads have: a cached page costs about a bare endpoint.
router.add_route(
    "/page/leaderboards/{label}", public(leaderboard_page), ["GET"], include_in_schema=False
)


# --- models -----------------------------------------------------------------------------------


def _model_context(db: Database, model_id: str) -> dict[str, Any]:
    with db.session(read_only=True) as session:
        model = models.get_model(session=session, model_id=model_id)
        if not models.is_published(session=session, model_id=model.id):
            raise NotFound(NOT_PUBLIC_MODEL.format(id=model_id))
        view = models.model_view(model)
        published = session.execute(
            select(Submission.id, Submission.benchmark_id, Leaderboard.label, Leaderboard.sort_key)
            .join(Leaderboard, Leaderboard.benchmark_id == Submission.benchmark_id)
            .where(Submission.model_id == model.id, models.published_submission_clause())
            .order_by(Leaderboard.label, Submission.created_at)
        ).all()
        return {"model": view, "published": [tuple(row) for row in published]}


async def model_entries(request: Request, published: list[tuple[str, ...]]) -> list[dict[str, Any]]:
    """The model's entries with their rank and score on each public leaderboard."""
    found = []
    for submission_id, benchmark_id, label, sort_key in published:
        try:
            compiled = await leaderboard_cache(request).compiled(label)
        except DomainError:
            continue
        data = json.loads(compiled.body)["data"]
        entry = next((e for e in data if e.get("submission_id") == submission_id), None)
        if entry is None:
            continue
        found.append(
            {
                "label": label,
                "benchmark_id": benchmark_id,
                "rank": entry.get("index"),
                "of": len(data),
                "sort_key": sort_key.removeprefix("scores."),
                "score": format_number(leaderboards.dotted_get(entry, sort_key)),
                "date": parse_date(entry.get("submission_date")),
                "submission_id": submission_id,
            }
        )
    return found


@router.get("/models/{model_id}")
async def model_page(model_id: str, request: Request, db: DatabaseDep) -> Response:
    """A public model: description, authors, paper and code links, and its entries."""
    try:
        context = await run_in_threadpool(_model_context, db, model_id)
    except DomainError as exc:
        return error_page(request, exc.status, exc.detail)
    entries = await model_entries(request, context["published"])
    return public_page(
        request,
        "pages/model.html",
        title=f"Model {model_id}",
        model=context["model"],
        entries=entries,
    )


# --- the stylesheet and icon ------------------------------------------------------------------


async def static(request: Request) -> Response:
    """The site's own static files (a fixed list: nothing else under this path)."""
    name = request.path_params["name"]
    if name not in STATIC_FILES:
        return error_page(request, 404, f"no file {name}")
    body, etag = static_file(name)
    return cacheable(request, body, etag, STATIC_FILES[name])


router.add_route(f"{STATIC_PREFIX}/{{name}}", public(static), ["GET"], include_in_schema=False)
