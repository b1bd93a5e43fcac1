"""`benchmarks create|list|show|update|close` against the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import functools

import pytest

from zerospeech_api.benchmarks import service
from zerospeech_api.db.engine import Database


@pytest.fixture
def cli_env_extra() -> dict[str, str]:
    return {"ZR_DEFAULT_MAX_ARCHIVE_BYTES": "7000000"}


@pytest.fixture
def cli(run_cli):
    return functools.partial(run_cli, "benchmarks")


def test_create_with_every_option_then_list_and_show(cli, db: Database) -> None:
    result = cli(
        "create", "sLM21", "--label", "Spoken LM", "--url", "https://zerospeech.com/slm21",
        "--start-date", "2021-01-01", "--end-date", "2099-12-31", "--no-auto-eval",
        "--evaluator", "scores", "--quota", "3/12h", "--max-size", "5G", "--private",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "created benchmark sLM21" in result.output
    with db.session(read_only=True) as session:
        b = service.get_benchmark(session=session, benchmark_id="sLM21")
        assert (b.start_date, b.end_date) == (dt.date(2021, 1, 1), dt.date(2099, 12, 31))
        assert (b.auto_eval, b.private, b.evaluator.name) == (False, True, "scores")
        assert (b.quota_count, b.quota_period_seconds, b.max_archive_bytes) == (3, 43200, 5 * 10**9)
    listed = cli("list").output
    assert "sLM21" in listed and "3/12h" in listed and "5,000,000,000" in listed
    assert "test-challenge" in listed
    shown = cli("show", "sLM21").output
    assert "quota       3/12h" in shown and "state       open" in shown


def test_defaults_start_today_and_use_the_settings_size(cli) -> None:
    assert cli("create", "abx", "--label", "ABX", "--url", "u").exit_code == 0
    shown = cli("show", "abx").output
    assert f"start date  {dt.datetime.now(dt.UTC).date().isoformat()}" in shown
    assert "7,000,000 bytes" in shown and "evaluator   scores" in shown


def test_update_and_close(cli, db: Database) -> None:
    cli(
        "create",
        "abx",
        "--label",
        "ABX",
        "--url",
        "u",
        "--quota",
        "1/1d",
        "--end-date",
        "2099-01-01",
    )
    result = cli(
        "update", "abx", "--label", "ABX 2", "--quota", "none", "--end-date", "none",
        "--evaluator", "none", "--max-size", "123", "--no-auto-eval",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with db.session(read_only=True) as session:
        b = service.get_benchmark(session=session, benchmark_id="abx")
        assert (b.label, b.quota_count, b.end_date, b.evaluator_id) == ("ABX 2", None, None, None)
        assert (b.max_archive_bytes, b.auto_eval) == (123, False)
    assert cli("close", "abx").exit_code == 0
    assert "state       closed" in cli("show", "abx").output
    assert cli("update", "abx", "--active").exit_code == 0
    assert "state       open" in cli("show", "abx").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "x", "--label", "X", "--url", "u", "--quota", "3"), "N/PERIOD"),
        (("create", "x", "--label", "X", "--url", "u", "--start-date", "soon"), "not a date"),
        (("create", "x", "--label", "X", "--url", "u", "--max-size", "big"), "not a size"),
        (("create", "x", "--label", "X", "--url", "u", "--evaluator", "nope"), "no evaluator"),
        (("create", "bad id", "--label", "X", "--url", "u"), "invalid benchmark id"),
        (("create", "test-challenge", "--label", "X", "--url", "u"), "already exists"),
        (("show", "nope"), "no benchmark nope"),
        (("close", "nope"), "no benchmark nope"),
        (("update", "test-challenge"), "nothing to change"),
        (("update", "test-challenge", "--end-date", "2000-01-01"), "before start date"),
    ],
)
def test_bad_input_exits_1_with_a_message(cli, args: tuple[str, ...], message: str) -> None:
    result = cli(*args)
    assert result.exit_code == 1
    assert message in result.output
