"""Several hosts on one database and one data folder: node folders, the shared folder's check,
the cluster-wide read-only switch, the outbox warning, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers.cli import cli_env_file, invoke_cli
from tests.helpers.processes import at_once, wait_for
from zerospeech_api.app import create_app
from zerospeech_api.appliance import supervisor
from zerospeech_api.checks import OUTBOX_WITH_POSTGRES
from zerospeech_api.cluster import (
    MARKER_NAME,
    SharedFolderError,
    check_shared_folder,
    marker_path,
)
from zerospeech_api.db.engine import Database
from zerospeech_api.metrics.folder import metrics_folder
from zerospeech_api.settings import Settings, safe_node_name
from zerospeech_api.submissions import storage


def test_node_names_are_plain_folder_names(make_settings: Callable[..., Settings]) -> None:
    assert safe_node_name("web-1.example.org") == "web-1.example.org"
    assert safe_node_name("a/b c") == "a-b-c"
    assert safe_node_name("..") == "node" and safe_node_name("") == "node"
    assert len(safe_node_name("x" * 300)) == 64
    settings = make_settings(node_name="../../etc")
    assert settings.node_dir.parent == settings.data_dir / "nodes"
    assert settings.node == "..-..-etc"


def test_temp_and_scratch_files_live_in_the_node_folder(
    make_settings: Callable[..., Settings],
) -> None:
    web1, web2 = make_settings(node_name="web1"), make_settings(node_name="web2")
    assert storage.tmp_dir(web1) == web1.data_dir / "nodes" / "web1" / "tmp"
    assert storage.tmp_dir(web1) != storage.tmp_dir(web2)
    assert metrics_folder(web1) != metrics_folder(web2)
    assert storage.archive_path(web1, "s-1") == storage.archive_path(web2, "s-1")  # shared


def test_supervise_files_are_per_host_on_postgresql(make_settings: Callable[..., Settings]) -> None:
    single = make_settings(node_name="web1")
    assert supervisor.layout(single).run_dir == single.data_dir.resolve() / "run"  # unchanged
    shared = make_settings(node_name="web1", database_url="postgresql+psycopg://db/zr")
    assert supervisor.layout(shared).run_dir == shared.node_dir.resolve() / "run"
    assert supervisor.layout(shared).logs_dir == shared.node_dir.resolve() / "logs"


def test_the_first_start_ties_the_folder_to_the_database(settings: Settings, db: Database) -> None:
    folder_id = check_shared_folder(settings=settings, db=db)
    assert marker_path(settings).read_text().strip() == folder_id
    assert check_shared_folder(settings=settings, db=db) == folder_id  # every later start


def test_hosts_starting_together_agree_on_one_id(settings: Settings, db: Database) -> None:
    def start() -> str:
        other = Database(db.url)
        try:
            return check_shared_folder(settings=settings, db=other)
        finally:
            other.dispose()

    ids = at_once(start, 4, timeout=60)  # raises the first error of any of them
    assert len(ids) == 4 and len(set(ids)) == 1


def test_a_wrong_or_local_folder_is_refused(
    settings: Settings, db: Database, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    check_shared_folder(settings=settings, db=db)
    local = make_settings(database_url=db.url, data_dir=tmp_path / "local")  # an empty folder
    with pytest.raises(SharedFolderError, match=f"has no {MARKER_NAME}"):
        check_shared_folder(settings=local, db=db)
    marker_path(local).write_text("0" * 32 + "\n")  # another installation's folder
    with pytest.raises(SharedFolderError, match="belongs to another database"):
        check_shared_folder(settings=local, db=db)


def test_a_used_folder_is_refused_with_a_new_database(
    settings: Settings, db: Database, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    marker_path(settings).parent.mkdir(parents=True, exist_ok=True)
    marker_path(settings).write_text("f" * 32 + "\n")
    with pytest.raises(SharedFolderError, match="was used with another database"):
        check_shared_folder(settings=settings, db=db)


def test_a_folder_this_host_cannot_write_is_refused(
    make_settings: Callable[..., Settings], db: Database, tmp_path: Path
) -> None:
    settings = make_settings(database_url=db.url, data_dir=tmp_path / "ro")
    settings.data_dir.mkdir()
    (settings.data_dir / "nodes").write_text("not a folder")  # what a read-only mount does
    with pytest.raises(SharedFolderError, match="is not writable here"):
        check_shared_folder(settings=settings, db=db)
    assert not marker_path(settings).exists()


def test_read_only_is_switched_for_every_server_at_once(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    env = cli_env_file(tmp_path / "cli.env", settings)
    apps = [create_app(settings), create_app(settings)]  # two servers (hosts) on one database
    with TestClient(apps[0]) as first, TestClient(apps[1]) as second:
        assert first.post("/auth/signup", json={}).status_code == 400
        result = invoke_cli(env, "read-only", "on")
        assert result.exit_code == 0, result.output
        assert "read-only: on for every host" in result.output
        for client in (first, second):
            wait_for(
                lambda c=client: c.post("/auth/signup", json={}).status_code == 423,
                timeout=10,
                what="the switch to reach the server",
            )
            assert client.get("/health").status_code == 200  # reads go on
            assert client.get("/_private/submit-available").json() is False
        assert "read-only: on" in invoke_cli(env, "read-only").output
        assert invoke_cli(env, "read-only", "off").exit_code == 0
        for client in (first, second):
            wait_for(
                lambda c=client: c.post("/auth/signup", json={}).status_code == 400,
                timeout=10,
                what="the switch back",
            )


def test_check_warns_that_several_hosts_need_smtp(
    settings: Settings, tmp_path: Path, backend: str
) -> None:
    env = cli_env_file(tmp_path / "cli.env", settings)
    result = invoke_cli(env, "check")
    assert (OUTBOX_WITH_POSTGRES in result.output) == (backend == "postgres")
    with_smtp = cli_env_file(tmp_path / "smtp.env", settings, {"ZR_SMTP_HOST": "smtp.example"})
    assert OUTBOX_WITH_POSTGRES not in invoke_cli(with_smtp, "check").output
