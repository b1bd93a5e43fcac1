"""HTTP routes of benchmarks (thin: parse, call one service function, return a schema)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from zerospeech_api.accounts.deps import PathUser
from zerospeech_api.benchmarks import service
from zerospeech_api.benchmarks.schemas import BenchmarkInfo, BenchmarkList, QuotaList
from zerospeech_api.db.tables import utcnow
from zerospeech_api.deps import AUTHENTICATED, DatabaseRoute, PublicRoute, SessionDep, SettingsDep

router = APIRouter(tags=["benchmarks"], route_class=DatabaseRoute, dependencies=AUTHENTICATED)
public = APIRouter(tags=["benchmarks"], route_class=PublicRoute)


@public.get("/benchmarks/list", response_model=BenchmarkList)
def list_benchmarks(session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """Public benchmarks (private ones such as `test-challenge` answer only by id)."""
    on = service.today()
    return {
        "benchmarks": [
            service.benchmark_info(b, settings=settings, on=on)
            for b in service.list_benchmarks(session=session)
        ]
    }


@public.get("/benchmarks/{benchmark_id}/info", response_model=BenchmarkInfo)
def benchmark_info(benchmark_id: str, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """One benchmark: dates, whether it is active, its evaluator, quota and size limit."""
    benchmark = service.get_benchmark(session=session, benchmark_id=benchmark_id)
    return service.benchmark_info(benchmark, settings=settings, on=service.today())


@router.get("/users/{username}/quota", response_model=QuotaList)
def user_quota(owner: PathUser, session: SessionDep) -> dict[str, Any]:
    """The user's submission quota on each open benchmark: limit, used, remaining and when the
    next slot frees (the user themselves or an admin)."""
    rows = service.user_quotas(session=session, user=owner, now=utcnow())
    return {
        "username": owner.username,
        "quotas": [
            {
                "benchmark": b.id,
                "label": b.label,
                "limit": usage.limit,
                "period": service.format_period(usage.period_seconds)
                if usage.period_seconds
                else None,
                "used": usage.used,
                "remaining": usage.remaining,
                "next_slot_at": usage.next_slot_at,
            }
            for b, usage in rows
        ],
    }
