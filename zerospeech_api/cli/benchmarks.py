"""`benchmarks` admin commands: create, list, show, update, close."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import click

from zerospeech_api.benchmarks import service
from zerospeech_api.builtin_rows import SCORES_EVALUATOR
from zerospeech_api.cli.context import CliContext, pass_ctx
from zerospeech_api.cli.output import domain_errors, fail, fields, table, yes_no
from zerospeech_api.db.tables import Benchmark
from zerospeech_api.settings import Settings

NONE_WORDS = {"none", "null", "-", ""}
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)b?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_date(value: str, option: str) -> dt.date | None:
    """YYYY-MM-DD, or None for `none`."""
    if value.strip().lower() in NONE_WORDS:
        return None
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        fail(f"{option}: {value!r} is not a date (YYYY-MM-DD)")


def parse_size(value: str) -> int | None:
    """Bytes: `5000000000`, `5G`, `500MB` (decimal units), or None for `none`."""
    if value.strip().lower() in NONE_WORDS:
        return None
    match = _SIZE.fullmatch(value.strip())
    if not match or int(match[1]) < 1:
        fail(f"--max-size: {value!r} is not a size in bytes (e.g. 50000000000 or 50G)")
    return int(match[1]) * _SIZE_UNITS[match[2].lower()]


def _none_or(value: str) -> str | None:
    return None if value.strip().lower() in NONE_WORDS else value


def _evaluator_name(benchmark: Benchmark) -> str:
    return benchmark.evaluator.name if benchmark.evaluator else "-"


def _size(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


@click.group(name="benchmarks")
def group() -> None:
    """Manage benchmarks (what participants submit to)."""


@group.command()
@click.argument("benchmark_id", metavar="ID")
@click.option("--label", required=True, help="Human-readable name.")
@click.option("--url", required=True, help="Page describing the benchmark.")
@click.option("--start-date", help="First day submissions are accepted (YYYY-MM-DD; today).")
@click.option("--end-date", help="Last day submissions are accepted (YYYY-MM-DD; none).")
@click.option(
    "--auto-eval/--no-auto-eval", default=True, help="Evaluate uploads automatically (yes)."
)
@click.option(
    "--evaluator",
    default=SCORES_EVALUATOR,
    show_default=True,
    help="Evaluator name (see `evaluators list`), or `none`.",
)
@click.option("--quota", help="Submissions per user and period: N/PERIOD, e.g. 3/1d, 10/12h.")
@click.option("--max-size", help="Largest archive in bytes (e.g. 50G; default from settings).")
@click.option("--private", is_flag=True, help="Entries never reach a public leaderboard.")
@pass_ctx
def create(
    ctx: CliContext,
    benchmark_id: str,
    label: str,
    url: str,
    start_date: str | None,
    end_date: str | None,
    auto_eval: bool,
    evaluator: str,
    quota: str | None,
    max_size: str | None,
    private: bool,
) -> None:
    """Create an active benchmark."""
    start = parse_date(start_date, "--start-date") if start_date else None
    end = parse_date(end_date, "--end-date") if end_date else None
    size = parse_size(max_size) if max_size else None
    with domain_errors(), ctx.db.transaction() as session:
        service.create_benchmark(
            session=session,
            benchmark_id=benchmark_id,
            label=label,
            url=url,
            start_date=start,
            end_date=end,
            auto_eval=auto_eval,
            evaluator=_none_or(evaluator),
            quota=_none_or(quota or ""),
            max_archive_bytes=size,
            private=private,
        )
    click.echo(f"created benchmark {benchmark_id}")


@group.command(name="list")
@pass_ctx
def list_(ctx: CliContext) -> None:
    """Every benchmark, private ones included."""
    on = service.today()
    with ctx.db.session(read_only=True) as session:
        rows = [
            (
                b.id,
                "open" if service.is_open(b, on=on) else "closed",
                b.start_date.isoformat(),
                b.end_date.isoformat() if b.end_date else "-",
                yes_no(b.auto_eval),
                _evaluator_name(b),
                service.format_quota(b) or "-",
                _size(b.max_archive_bytes),
                yes_no(b.private),
                b.label,
            )
            for b in service.list_benchmarks(session=session, include_private=True)
        ]
    table(
        ("id", "state", "start", "end", "auto-eval", "evaluator", "quota", "max size", "private",
         "label"),
        rows,
    )  # fmt: skip


def _show(benchmark: Benchmark, settings: Settings) -> None:
    fields(
        [
            ("id", benchmark.id),
            ("label", benchmark.label),
            ("url", benchmark.url),
            ("state", "open" if service.is_open(benchmark, on=service.today()) else "closed"),
            ("active", yes_no(benchmark.active)),
            ("start date", benchmark.start_date.isoformat()),
            ("end date", benchmark.end_date.isoformat() if benchmark.end_date else "-"),
            ("auto-eval", yes_no(benchmark.auto_eval)),
            ("evaluator", _evaluator_name(benchmark)),
            ("quota", service.format_quota(benchmark) or "-"),
            ("max size", f"{service.archive_limit(benchmark, settings):,} bytes"),
            ("private", yes_no(benchmark.private)),
            ("created", benchmark.created_at.isoformat(timespec="seconds")),
        ]
    )


@group.command()
@click.argument("benchmark_id", metavar="ID")
@pass_ctx
def show(ctx: CliContext, benchmark_id: str) -> None:
    """One benchmark in detail."""
    with domain_errors(), ctx.db.session(read_only=True) as session:
        _show(service.get_benchmark(session=session, benchmark_id=benchmark_id), ctx.settings)


@group.command()
@click.argument("benchmark_id", metavar="ID")
@click.option("--label", help="Human-readable name.")
@click.option("--url", help="Page describing the benchmark.")
@click.option("--start-date", help="YYYY-MM-DD.")
@click.option("--end-date", help="YYYY-MM-DD, or `none` for no end.")
@click.option("--auto-eval/--no-auto-eval", default=None, help="Evaluate uploads automatically.")
@click.option("--evaluator", help="Evaluator name, or `none`.")
@click.option("--quota", help="N/PERIOD (e.g. 3/1d), or `none` for no quota.")
@click.option("--max-size", help="Largest archive in bytes, or `none` for the default.")
@click.option("--active/--inactive", default=None, help="Open or close the benchmark.")
@click.option("--private/--public", default=None, help="Keep entries off public leaderboards.")
@pass_ctx
def update(
    ctx: CliContext,
    benchmark_id: str,
    label: str | None,
    url: str | None,
    start_date: str | None,
    end_date: str | None,
    auto_eval: bool | None,
    evaluator: str | None,
    quota: str | None,
    max_size: str | None,
    active: bool | None,
    private: bool | None,
) -> None:
    """Change some fields of a benchmark."""
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "label": label,
            "url": url,
            "auto_eval": auto_eval,
            "active": active,
            "private": private,
        }.items()
        if v is not None
    }
    if start_date is not None:
        start = parse_date(start_date, "--start-date")
        if start is None:
            fail("--start-date cannot be none")
        changes["start_date"] = start
    if end_date is not None:
        changes["end_date"] = parse_date(end_date, "--end-date")
    if evaluator is not None:
        changes["evaluator"] = _none_or(evaluator)
    if quota is not None:
        changes["quota"] = _none_or(quota)
    if max_size is not None:
        changes["max_archive_bytes"] = parse_size(max_size)
    if not changes:
        fail("nothing to change: give at least one option (see --help)")
    with domain_errors(), ctx.db.transaction() as session:
        service.update_benchmark(session=session, benchmark_id=benchmark_id, **changes)
    click.echo(f"updated benchmark {benchmark_id}")


@group.command()
@click.argument("benchmark_id", metavar="ID")
@pass_ctx
def close(ctx: CliContext, benchmark_id: str) -> None:
    """Stop accepting submissions (leaderboards stay readable)."""
    with domain_errors(), ctx.db.transaction() as session:
        service.close_benchmark(session=session, benchmark_id=benchmark_id)
    click.echo(f"closed benchmark {benchmark_id}")
