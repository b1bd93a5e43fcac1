"""`submissions list|show|delete|set-status|rejoin` against the database."""

from __future__ import annotations

import functools

import pytest

from tests.helpers.factories import (
    create_submission,
    make_benchmark,
    make_model,
    make_user,
    store_part,
    submission_body,
    three_parts,
)
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Submission
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage


@pytest.fixture
def cli(run_cli):
    return functools.partial(run_cli, "submissions")


def test_list_with_filters(cli, db: Database, settings: Settings) -> None:
    ada, bob = make_user(db, settings, username="ada"), make_user(db, settings, username="bob")
    make_benchmark(db, "abx")
    one = create_submission(db, settings, ada, submission_body(make_model(db, ada))).id
    two = create_submission(db, settings, bob, submission_body(make_model(db, bob), "abx")).id
    everything = cli("list").output
    assert one in everything and two in everything and "0/2" in everything
    only_ada = cli("list", "--user", "ada").output
    assert one in only_ada and two not in only_ada
    only_abx = cli("list", "--benchmark", "abx", "--status", "uploading").output
    assert two in only_abx and one not in only_abx
    assert "(none)" in cli("list", "--status", "completed").output
    unknown = cli("list", "--user", "ghost")
    assert unknown.exit_code == 1 and "no user ghost" in unknown.output
    assert cli("list", "--status", "bogus").exit_code == 2


def test_show_has_parts_and_log(cli, db: Database, settings: Settings) -> None:
    submission_id, parts = three_parts(db, settings)
    store_part(db, settings, submission_id, "s_1.zip", parts[0])
    shown = cli("show", submission_id)
    assert shown.exit_code == 0, shown.output
    assert "s_2.zip" in shown.output and "uploading: created by" in shown.output
    assert "received s_1.zip, s_3.zip" in shown.output
    missing = cli("show", "nope")
    assert missing.exit_code == 1 and "no submission nope" in missing.output


def test_set_status_is_logged_with_the_reason(cli, db: Database, settings: Settings) -> None:
    submission_id, _ = three_parts(db, settings)
    result = cli("set-status", submission_id, "cancelled", "--reason", "participant asked")
    assert result.exit_code == 0, result.output
    assert "uploading -> cancelled" in result.output
    assert "admin: participant asked" in cli("show", submission_id).output
    assert cli("set-status", submission_id, "failed").exit_code == 2  # --reason is required
    refused = cli("set-status", submission_id, "uploaded", "--reason", "x")
    assert refused.exit_code == 1 and "has no archive" in refused.output


def test_delete_removes_rows_and_files(cli, db: Database, settings: Settings) -> None:
    submission_id, parts = three_parts(db, settings)
    store_part(db, settings, submission_id, "s_1.zip", parts[0])
    assert cli("delete", submission_id, input="n\n").exit_code == 1  # asked, declined
    assert storage.submission_dir(settings, submission_id).exists()
    result = cli("delete", submission_id, "--yes")
    assert result.exit_code == 0, result.output
    with db.session(read_only=True) as session:
        assert session.get(Submission, submission_id) is None
    assert not storage.submission_dir(settings, submission_id).exists()


def test_rejoin(cli, db: Database, settings: Settings) -> None:
    submission_id, parts = three_parts(db, settings)
    store_part(db, settings, submission_id, "s_1.zip", parts[0])
    early = cli("rejoin", submission_id)
    assert early.exit_code == 1 and "not received yet: s_2.zip" in early.output
    store_part(db, settings, submission_id, "s_2.zip", parts[1])
    result = cli("rejoin", submission_id)
    assert result.exit_code == 0, result.output
    assert "uploaded" in result.output
    assert storage.archive_path(settings, submission_id).is_file()
    again = cli("rejoin", submission_id)
    assert again.exit_code == 1 and "nothing to join" in again.output


def test_rejoin_says_why_a_join_failed_and_can_be_run_again(
    cli, db: Database, settings: Settings
) -> None:
    submission_id, parts = three_parts(db, settings)
    store_part(db, settings, submission_id, "s_1.zip", parts[0])
    store_part(db, settings, submission_id, "s_2.zip", parts[1])
    part = storage.part_path(settings, submission_id, 1)
    part.unlink()
    part.mkdir()  # an I/O error of the platform's
    failed = cli("rejoin", submission_id)
    assert failed.exit_code == 1
    assert "joining the parts failed: Is a directory; the parts are kept" in failed.output
    assert "joining the parts failed" in cli("show", submission_id).output
    part.rmdir()
    part.write_bytes(parts[1])
    result = cli("rejoin", submission_id)
    assert result.exit_code == 0 and "uploaded" in result.output, result.output


def test_cancel_a_queued_or_running_evaluation(cli, db: Database, settings: Settings) -> None:
    from tests.helpers.factories import events_of, make_submission, status_of
    from zerospeech_api.db.tables import Job, JobState
    from zerospeech_api.evaluation import jobs

    user = make_user(db, settings)
    bench = make_benchmark(db)
    queued, running, done = (
        make_submission(db, settings, user, benchmark_id=bench) for _ in range(3)
    )
    for sid in (queued, running):
        with db.transaction() as session:
            jobs.enqueue(session=session, submission_id=sid, max_attempts=3, reason="test")
    claimed = jobs.claim(db=db, owner="w1", lease_seconds=60)
    assert claimed is not None and claimed.submission_id == queued
    first = cli("cancel", queued)
    assert first.exit_code == 0, first.output
    assert "stops the running evaluation" in first.output  # it was claimed: evaluating
    assert jobs.renew(db=db, job_id=claimed.job_id, owner="w1", lease_seconds=60) is False
    second = cli("cancel", running)
    assert second.exit_code == 0 and "stops" not in second.output
    for sid in (queued, running):
        assert status_of(db, sid) == "cancelled"
        assert "cancelled by an administrator (command line)" in events_of(db, sid)[-1].message
    with db.session(read_only=True) as session:
        assert {j.state for j in session.query(Job)} == {JobState.CANCELLED}
    again = cli("cancel", queued)
    assert again.exit_code == 1 and "cannot be cancelled" in again.output
    assert status_of(db, done) == "uploaded"
    assert cli("cancel", "no-such-id").exit_code == 1
