"""A first run, from the built pyz: the README's first command in an empty folder gives a public
demo leaderboard and an evaluation worker; `supervise` started as root runs as ZR_RUN_AS_USER."""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.factories import DEFAULT_PASSWORD, make_archive
from tests.helpers.processes import Process, free_port, wait_for, wait_until_responds
from tests.helpers.pyz import Built, pyz_env, run_pyz
from tests.helpers.zrc import ZrcDriver
from zerospeech_api.demo import DEMO_BENCHMARK, DEMO_LABEL, DEMO_LEADERBOARD, demo_entries

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FIRST_COMMAND = "./build.sh && ./dist/zerospeech-api.pyz dev --demo"


def test_the_readme_starts_with_this_first_command() -> None:
    first_block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert first_block is not None
    commands = [line for line in first_block.group(1).splitlines() if line.strip()]
    assert commands[1] == FIRST_COMMAND  # after its comment line


def test_the_first_command_serves_a_demo_leaderboard_and_evaluates(
    built: Built, tmp_path: Path
) -> None:
    """`dev --demo` of the pyz in an empty folder: nothing else is run before or beside it."""
    fresh = tmp_path / "fresh clone"
    fresh.mkdir()
    env = pyz_env(tmp_path / "shiv")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dev = Process(
        [sys.executable, str(built.pyz), "dev", "--demo", "--port", str(port)],
        cwd=fresh,
        env=env,
        log=tmp_path / "dev.log",
    )
    try:
        wait_until_responds(f"{url}/health", dev, timeout=90)
        listed = httpx.get(f"{url}/leaderboards/list").json()["leaderboards"]
        assert [(lb["label"], lb["entries"]) for lb in listed] == [
            (DEMO_LEADERBOARD, len(demo_entries()))
        ]
        page = httpx.get(f"{url}/page/leaderboards/{DEMO_LEADERBOARD}")
        assert page.status_code == 200 and DEMO_LABEL in page.text
        created = run_pyz(
            built.pyz,
            *("users", "create", "ada", "--email", "ada@example.org", "--first-name", "Ada"),
            *("--last-name", "Lovelace", "--affiliation", "Engines", "--password-stdin"),
            "--verified",
            cwd=fresh,
            env=env,
            input=f"{DEFAULT_PASSWORD}\n",
        )
        assert created.returncode == 0, created.stderr
        archive = make_archive(tmp_path / "submission.zip", payload_bytes=5000)
        with ZrcDriver(url, tmp_path / "zrc", username="ada", password=DEFAULT_PASSWORD) as zrc:
            submission_id = zrc.submit(archive, DEMO_BENCHMARK, multipart=False)
            status = zrc.wait_status("completed", "failed", "invalid", timeout=90)
        assert status == "completed", dev.output()[-3000:]
        board = httpx.get(f"{url}/leaderboards/{DEMO_LEADERBOARD}/json").json()["data"]
        assert submission_id in [entry["submission_id"] for entry in board]
    finally:
        dev.stop()


def python_for(user: str) -> str | None:
    """A Python of this minor version that `user` can run (the pyz's wheels need it), or None."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if not candidate:
            continue
        try:
            probe = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"],
                user=user,
                capture_output=True,
                text=True,
                timeout=30,
            )
        except OSError:
            continue
        if probe.returncode == 0 and probe.stdout.strip() == str(sys.version_info[:2]):
            return candidate
    return None


@pytest.fixture
def nobodys_folder() -> Iterator[Path]:
    """A folder owned by `nobody`, outside the test's own (root-only) temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="zr-first-run-"))
    os.chmod(folder, 0o755)
    record = pwd.getpwnam("nobody")
    os.chown(folder, record.pw_uid, record.pw_gid)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def owner(path: Path) -> str:
    return pwd.getpwuid(path.stat().st_uid).pw_name


def uid_of(pid: int) -> str:
    return pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_name


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can switch users")
def test_supervise_started_as_root_runs_everything_as_run_as_user(
    built: Built, nobodys_folder: Path
) -> None:
    python = python_for("nobody")
    if python is None:
        pytest.skip(f"no Python {sys.version_info[:2]} that user nobody can run")
    pyz = nobodys_folder / "zerospeech-api.pyz"
    shutil.copy(built.pyz, pyz)
    port = free_port()
    env_file = nobodys_folder / "site.env"
    env_file.write_text(
        f"ZR_RUN_AS_USER=nobody\nZR_BIND=127.0.0.1:{port}\nZR_WORKERS=1\n"
        f"ZR_DATA_DIR={nobodys_folder / 'data'}\nZR_SECRET_KEY={secrets.token_urlsafe(48)}\n"
    )
    os.chown(env_file, pwd.getpwnam("nobody").pw_uid, -1)
    os.chmod(env_file, 0o600)
    env = pyz_env(nobodys_folder / "shiv")
    supervise = Process(
        [python, str(pyz), "--env-file", str(env_file), "supervise"],
        cwd=nobodys_folder,
        env=env,
        log=nobodys_folder / "supervise.log",
    )
    try:
        wait_until_responds(f"http://127.0.0.1:{port}/health", supervise, timeout=90)
        assert "supervise: switched to user nobody" in supervise.output()
        assert "CRIT Supervisor is running as root" not in supervise.output()
        # The same process (exec), supervisord in it, and every program: nobody's.
        assert uid_of(supervise.proc.pid) == "nobody"

        def running_pids() -> list[int]:
            status = run_pyz(
                pyz, "--env-file", str(env_file), "ctl", "status", cwd=nobodys_folder, env=env
            )
            pids = [int(pid) for pid in re.findall(r"RUNNING\s+pid (\d+)", status.stdout)]
            return pids if len(pids) == 2 else []

        # /health answers before supervisord counts the programs RUNNING (startsecs).
        pids = wait_for(running_pids, what="api and worker-1 RUNNING in ctl status")
        assert {uid_of(pid) for pid in pids} == {"nobody"}
        data = nobodys_folder / "data"
        wait_for(lambda: (data / "logs" / "api.log").is_file(), what="the api log")
        for path in (data / "zerospeech.db", data / "run", data / "logs" / "api.log"):
            assert owner(path) == "nobody", path
    finally:
        supervise.stop()
