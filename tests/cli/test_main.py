"""The CLI root and the foundation commands, run as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.processes import Process, cli_command, free_port, wait_until_responds
from zerospeech_api import __version__
from zerospeech_api.db.migrate import head_revision


def run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ZR_")}
    return subprocess.run(
        [*cli_command(), *args],
        cwd=tmp_path,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        input=input,
        timeout=120,
    )


def test_init_writes_a_private_secret_once_and_is_idempotent(tmp_path: Path) -> None:
    first = run(tmp_path, "init")
    assert first.returncode == 0, first.stderr
    env = tmp_path / ".env"
    content = env.read_text()
    assert content.startswith("ZR_SECRET_KEY=") and len(content.strip()) > 50
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    assert "created benchmark test-challenge" in first.stdout
    second = run(tmp_path, "init")
    assert second.returncode == 0, second.stderr
    assert env.read_text() == content
    assert "created" not in second.stdout


def test_check_passes_after_init_and_masks_the_secret(tmp_path: Path) -> None:
    run(tmp_path, "init")
    result = run(tmp_path, "check")
    assert result.returncode == 0, result.stderr
    secret = (tmp_path / ".env").read_text().split("=", 1)[1].strip()
    assert secret not in result.stdout
    assert "check: ok" in result.stdout


def test_check_fails_without_init(tmp_path: Path) -> None:
    result = run(tmp_path, "check")
    assert result.returncode == 1
    assert "ZR_SECRET_KEY" in result.stderr


def test_a_bad_setting_stops_start_up_naming_it(tmp_path: Path) -> None:
    result = run(tmp_path, "serve", env={"ZR_WORKERS": "lots"})
    assert result.returncode != 0
    assert "ZR_WORKERS" in result.stderr


def test_env_file_option_is_used(tmp_path: Path) -> None:
    site = tmp_path / "conf" / "site.env"
    site.parent.mkdir()
    result = run(tmp_path, "--env-file", str(site), "init")
    assert result.returncode == 0, result.stderr
    assert site.read_text().startswith("ZR_SECRET_KEY=")
    assert not (tmp_path / ".env").exists()


def test_migrate_reports_the_head_revision(tmp_path: Path) -> None:
    run(tmp_path, "init")
    result = run(tmp_path, "migrate")
    assert result.returncode == 0, result.stderr
    assert f"revision {head_revision()}" in result.stdout


def test_version(tmp_path: Path) -> None:
    result = run(tmp_path, "version")
    assert result.stdout.startswith(f"zerospeech-api {__version__}")


def test_dev_and_the_zr_api_alias_serve_the_app(tmp_path: Path) -> None:
    run(tmp_path, "init")
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
