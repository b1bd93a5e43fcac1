"""The built pyz under graceful reloads and first starts: every forked worker boots.

Workers forked by the gunicorn master used to share its open file of the pyz (importlib.metadata
keeps one) and read package metadata through it at once: now and then one read the wrong bytes
(`zlib.error`), failed to boot, and gunicorn exited. Both tests are statistical: before the fix,
about one reload in ten failed (twelve reloads plus three first starts caught it in most runs).

The readers go straight to gunicorn, one connection per request, and resend a read whose
connection failed, once, as the shipped nginx config does: a worker that stops can reset a
connection it accepted but had not read yet (uvicorn), which is not what is tested here. A dead
master fails every read, retried or not.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.helpers.processes import wait_for
from tests.helpers.pyz import FORK_PROBE, Built, Load, pyz_env, run_pyz
from tests.helpers.server import Server

pytestmark = pytest.mark.e2e

WORKERS = 4
RELOADS = 12
FIRST_STARTS = 3
PATHS = ("/", "/health", "/benchmarks/list")
BOOTED = "Application startup complete."  # uvicorn, once per worker when it is ready to serve
BOOT_FAILURES = ("Worker failed to boot", "zlib.error", "Exception in worker process")


def boot_failures(server: Server) -> list[str]:
    """Log lines telling that a worker did not boot."""
    lines = server.process.output().splitlines()
    return [line for line in lines if any(failure in line for failure in BOOT_FAILURES)]


def wait_for_boots(server: Server, count: int) -> None:
    """Wait until `count` workers in all have booted; fail at once if the master exits."""

    def booted() -> bool:
        assert server.process.alive(), f"gunicorn exited:\n{server.process.output()[-4000:]}"
        return server.process.output().count(BOOTED) >= count

    wait_for(booted, timeout=90, what=f"{count} booted workers")


def start_pyz(
    make_server: Callable[..., Server],
    built: Built,
    shiv_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    **kwargs: object,
) -> Server:
    """`serve` from the pyz with 4 workers, extracting afresh into `shiv_root`."""
    monkeypatch.setenv("SHIV_ROOT", str(shiv_root))
    server = make_server(workers=WORKERS, command=[sys.executable, str(built.pyz)], **kwargs)
    wait_for_boots(server, WORKERS)
    return server


IN_THE_PYZ = """
import importlib.metadata, os, sys

from zerospeech_api.appliance.pyz import archive_path
from zerospeech_api.cli import main

# Listing every distribution reads the zip with the standard finder, which keeps it open
# (cached). (Named look-ups such as version() go through the pyz's own finder and do not.)
list(importlib.metadata.distributions())
if sys.argv[1] == "cli":
    main(["version"], standalone_mode=False)  # the command line's set-up, as `serve` runs it
stat = os.stat(archive_path())
print(probe((stat.st_dev, stat.st_ino)))
"""


def test_processes_forked_in_the_pyz_read_it_through_their_own_open_file(
    built: Built, tmp_path: Path
) -> None:
    """The deterministic side of the reload test: no forked child shares the pyz's offset."""
    script = tmp_path / "probe.py"
    script.write_text(FORK_PROBE + IN_THE_PYZ)
    env = pyz_env(tmp_path / "shiv", SHIV_INTERPRETER="1")
    outcomes = {}
    for setup in ("none", "cli"):
        result = run_pyz(built.pyz, str(script), setup, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        outcomes[setup] = result.stdout.split()[-1]
    # Without the command line's set-up a child shares it (the probe can tell); with it, not.
    assert outcomes == {"none": "shared", "cli": "private"}


def test_reloads_under_load_boot_every_worker_and_drop_no_request(
    built: Built,
    make_server: Callable[..., Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = start_pyz(make_server, built, tmp_path / "shiv", monkeypatch)
    with ExitStack() as stack:
        loads = [
            stack.enter_context(Load(server.url, path, threads=1, keep_alive=False, retries=1))
            for path in PATHS
        ]
        for reload in range(1, RELOADS + 1):
            server.process.signal(signal.SIGHUP)  # what `ctl reload` and systemctl reload send
            wait_for_boots(server, WORKERS * (reload + 1))
        for load in loads:
            load.more(5)  # the last generation serves too
    assert server.process.alive()
    assert boot_failures(server) == []
    assert [failure for load in loads for failure in load.failures] == []


def test_first_starts_from_a_fresh_extraction_boot_every_worker(
    built: Built,
    make_server: Callable[..., Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for start in range(FIRST_STARTS):
        server = start_pyz(
            make_server, built, tmp_path / f"shiv {start}", monkeypatch, init=not start
        )
        failures = boot_failures(server)
        server.stop()
        assert failures == [], server.process.output()[-4000:]
        assert list((tmp_path / f"shiv {start}").glob("*/site-packages"))  # extracted afresh
