"""HTTP routes of benchmarks (thin: parse, call one service function, return a schema)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from zerospeech_api.benchmarks import service
from zerospeech_api.benchmarks.schemas import BenchmarkInfo, BenchmarkList
from zerospeech_api.deps import SessionDep, SettingsDep

router = APIRouter(tags=["benchmarks"])


@router.get("/benchmarks/list", response_model=BenchmarkList)
def list_benchmarks(session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """Public benchmarks (private ones such as `test-challenge` answer only by id)."""
    on = service.today()
    return {
        "benchmarks": [
            service.benchmark_info(b, settings=settings, on=on)
            for b in service.list_benchmarks(session=session)
        ]
    }


@router.get("/benchmarks/{benchmark_id}/info", response_model=BenchmarkInfo)
def benchmark_info(benchmark_id: str, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """One benchmark: dates, whether it is active, its evaluator, quota and size limit."""
    benchmark = service.get_benchmark(session=session, benchmark_id=benchmark_id)
    return service.benchmark_info(benchmark, settings=settings, on=service.today())
