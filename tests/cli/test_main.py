"""The CLI root and the foundation commands, run as real subprocesses."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers.cli import cli_process
from tests.helpers.factories import DEFAULT_PASSWORD, make_archive
from tests.helpers.processes import (
    Process,
    children,
    cli_command,
    free_port,
    process_alive,
    wait_for,
    wait_until_responds,
)
from tests.helpers.zrc import ZrcDriver
from zerospeech_api import __version__
from zerospeech_api.appliance import supervisor
from zerospeech_api.db.migrate import head_revision
from zerospeech_api.demo import DEMO_BENCHMARK, DEMO_LEADERBOARD, demo_entries


def test_init_writes_a_private_secret_once_and_is_idempotent(tmp_path: Path) -> None:
    first = cli_process(tmp_path, "init")
    assert first.returncode == 0, first.stderr
    env = tmp_path / ".env"
    content = env.read_text()
    assert content.startswith("ZR_SECRET_KEY=") and len(content.strip()) > 50
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    assert "created benchmark test-challenge" in first.stdout
    second = cli_process(tmp_path, "init")
    assert second.returncode == 0, second.stderr
    assert env.read_text() == content
    assert "created" not in second.stdout


def test_check_passes_after_init_and_masks_the_secret(tmp_path: Path) -> None:
    cli_process(tmp_path, "init")
    result = cli_process(tmp_path, "check")
    assert result.returncode == 0, result.stderr
    secret = (tmp_path / ".env").read_text().split("=", 1)[1].strip()
    assert secret not in result.stdout
    assert "check: ok" in result.stdout


def test_check_fails_without_init(tmp_path: Path) -> None:
    result = cli_process(tmp_path, "check")
    assert result.returncode == 1
    assert "ZR_SECRET_KEY" in result.stderr


def test_a_bad_setting_stops_start_up_naming_it(tmp_path: Path) -> None:
    result = cli_process(tmp_path, "serve", env={"ZR_WORKERS": "lots"})
    assert result.returncode != 0
    assert "ZR_WORKERS" in result.stderr


def test_env_file_option_is_used(tmp_path: Path) -> None:
    site = tmp_path / "conf" / "site.env"
    site.parent.mkdir()
    result = cli_process(tmp_path, "--env-file", str(site), "init")
    assert result.returncode == 0, result.stderr
    assert site.read_text().startswith("ZR_SECRET_KEY=")
    assert not (tmp_path / ".env").exists()


def test_migrate_reports_the_head_revision(tmp_path: Path) -> None:
    cli_process(tmp_path, "init")
    result = cli_process(tmp_path, "migrate")
    assert result.returncode == 0, result.stderr
    assert f"revision {head_revision()}" in result.stdout


def test_version(tmp_path: Path) -> None:
    result = cli_process(tmp_path, "version")
    assert result.stdout.startswith(f"zerospeech-api {__version__}")


def test_dev_and_the_zr_api_alias_serve_the_app(tmp_path: Path) -> None:
    cli_process(tmp_path, "init")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZR_")}
    alias = str(Path(sys.executable).parent / "zr-api")  # the console script of this install
    for argv in ([*cli_command(), "dev"], [alias]):
        port = free_port()
        process = Process(
            [*argv, "--port", str(port), "--no-reload"],
            cwd=tmp_path,
            env=env,
            log=tmp_path / f"dev-{port}.log",
        )
        try:
            wait_until_responds(f"http://127.0.0.1:{port}/health", process)
        finally:
            process.stop()
        assert "rid=" in process.output()  # our log format, not uvicorn's default


# --- a first run: dev with the demo data and an evaluation worker ------------------------------


def dev_worker(dev: Process) -> int:
    """The pid of the `worker` child of a running `dev`."""

    def find() -> int | None:
        for child in children(dev.proc.pid):
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"worker" in argv:
                return child
        return None

    pid = wait_for(find, timeout=30, what="the dev worker")
    wait_for(lambda: f"[{pid}] zerospeech_api.worker" in dev.output(), what="the worker to run")
    return pid


def start_dev(tmp_path: Path, *args: str) -> tuple[Process, str]:
    """`dev ARGS --no-reload` in `tmp_path` on a free port, answering; returns it and its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZR_")}
    process = Process(
        [*cli_command(), "dev", *args, "--port", str(port), "--no-reload"],
        cwd=tmp_path,
        env=env,
        log=tmp_path / f"dev-{port}.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_responds(f"{url}/health", process)
    except BaseException:
        process.stop()
        raise
    return process, url


def test_dev_on_a_fresh_folder_sets_up_serves_the_demo_and_evaluates(tmp_path: Path) -> None:
    """No init: dev writes the secret, creates the demo, and its worker completes a submission."""
    dev, url = start_dev(tmp_path, "--demo")
    try:
        assert (tmp_path / ".env").read_text().startswith("ZR_SECRET_KEY=")
        listed = httpx.get(f"{url}/leaderboards/list").json()["leaderboards"]
        assert [lb["label"] for lb in listed] == [DEMO_LEADERBOARD]
        assert listed[0]["entries"] == len(demo_entries())
        created = cli_process(
            tmp_path,
            *("users", "create", "ada", "--email", "ada@example.org", "--first-name", "Ada"),
            *("--last-name", "Lovelace", "--affiliation", "Engines", "--password-stdin"),
            "--verified",
            input=f"{DEFAULT_PASSWORD}\n",
        )
        assert created.returncode == 0, created.stderr
        archive = make_archive(tmp_path / "sub.zip", payload_bytes=1000)
        with ZrcDriver(url, tmp_path / "zrc", username="ada", password=DEFAULT_PASSWORD) as zrc:
            submission_id = zrc.submit(archive, DEMO_BENCHMARK, multipart=False)
            assert zrc.wait_status("completed", "failed", "invalid", timeout=60) == "completed"
        board = httpx.get(f"{url}/leaderboards/{DEMO_LEADERBOARD}/json").json()["data"]
        assert submission_id in [entry["submission_id"] for entry in board]
    finally:
        dev.stop()
    assert "created leaderboard demo-leaderboard" in dev.output()


def test_dev_stops_its_worker_and_the_worker_dies_with_a_killed_dev(tmp_path: Path) -> None:
    cli_process(tmp_path, "init")
    dev, _ = start_dev(tmp_path)
    try:
        worker = dev_worker(dev)
        dev.signal(signal.SIGTERM)  # dev alone, not its process group
        dev.proc.wait(60)
        # Stopped and reaped by dev before it exits, not orphaned.
        assert not process_alive(worker)
        assert "signal 15: stopping after the current job" in dev.output()
    finally:
        dev.stop()
    killed, _ = start_dev(tmp_path)
    try:
        worker = dev_worker(killed)
        killed.signal(signal.SIGKILL)
        killed.proc.wait(10)
        wait_for(lambda: not process_alive(worker), what="the worker to die with dev")
    finally:
        killed.stop()


def test_dev_no_worker_runs_no_worker(tmp_path: Path) -> None:
    dev, _ = start_dev(tmp_path, "--no-worker")
    try:
        argvs = [Path(f"/proc/{c}/cmdline").read_bytes() for c in children(dev.proc.pid)]
        assert not any(b"\0worker" in argv for argv in argvs), argvs
    finally:
        dev.stop()


def test_init_demo_creates_the_demo_once_and_plain_init_never(tmp_path: Path) -> None:
    plain = cli_process(tmp_path, "init")
    assert plain.returncode == 0 and DEMO_BENCHMARK not in plain.stdout
    first = cli_process(tmp_path, "init", "--demo")
    assert first.returncode == 0, first.stderr
    assert f"created benchmark {DEMO_BENCHMARK}" in first.stdout
    assert f"created leaderboard {DEMO_LEADERBOARD}" in first.stdout
    again = cli_process(tmp_path, "init", "--demo")
    assert again.returncode == 0 and "created" not in again.stdout


# --- friendlier edges of supervise and ctl ------------------------------------------------------


def test_ctl_without_supervise_says_so_in_one_plain_line(tmp_path: Path) -> None:
    cli_process(tmp_path, "init")
    socket_path = tmp_path / "data" / "run" / "supervisor.sock"
    expected = f"error: {supervisor.NOT_RUNNING.format(socket=socket_path)}\n"
    never_started = cli_process(tmp_path, "ctl", "status")
    assert (never_started.returncode, never_started.stderr) == (1, expected)
    # A config left behind by a supervise that has stopped: the same answer, not supervisorctl's.
    (tmp_path / "data" / "run").mkdir(parents=True)
    shown = cli_process(tmp_path, "supervise", "--print-config").stdout
    (tmp_path / "data" / "run" / "supervisord.conf").write_text(shown)
    stopped = cli_process(tmp_path, "ctl", "restart", "api")
    assert (stopped.returncode, stopped.stderr, stopped.stdout) == (1, expected, "")


@pytest.mark.skipif(os.geteuid() != 0, reason="supervise switches users only when run as root")
def test_supervise_as_root_explains_or_switches_to_the_configured_user(tmp_path: Path) -> None:
    # No ZR_RUN_AS_USER: it says why supervisord will complain, and how to avoid it.
    # No init: it stops at the missing secret, after the warning.
    warned = cli_process(tmp_path, "supervise")
    assert supervisor.ROOT_WARNING.format(prefix="ZR_") in warned.stderr
    assert "ZR_SECRET_KEY" in warned.stderr
    # ZR_RUN_AS_USER: it becomes that user first, so it checks the files as that user (this
    # test's folder is root's alone) and stops saying what that user cannot do, before any file.
    switched = cli_process(tmp_path, "supervise", env={"ZR_RUN_AS_USER": "nobody"})
    assert switched.returncode == 1
    assert switched.stderr.startswith("error: supervise as nobody: ")
    assert f"nobody cannot write the data folder {tmp_path / 'data'}" in switched.stderr
    assert "Traceback" not in switched.stderr and not (tmp_path / "data").exists()
