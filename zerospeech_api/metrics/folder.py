"""The multiprocess folder: one per server (in its host's node folder, so hosts sharing the data
folder never empty each other's), emptied when `serve`, `dev` or `supervise` starts.

prometheus-client decides at import whether values live in memory or in per-process files, from
PROMETHEUS_MULTIPROC_DIR: so the variable is set here, in the command's own process, before any
server process imports the app (gunicorn workers and uvicorn's reloader inherit it). Nothing in
this module imports prometheus_client at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zerospeech_api.settings import Settings

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_folder(settings: Settings) -> Path:
    """Where the server processes keep their metric files."""
    return settings.node_dir.resolve() / "run" / "metrics"


def use_metrics_folder(settings: Settings) -> Path:
    """Empty the folder and make it this process's (and its children's) multiprocess folder.

    Files of an earlier run are removed: their processes are gone, and their counters would
    otherwise be added to the new server's forever. Only `*.db` files are touched.
    """
    folder = metrics_folder(settings)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[MULTIPROCESS_ENV] = str(folder)
    return folder


def mark_worker_dead(_server: Any, worker: Any) -> None:
    """gunicorn child_exit: forget the live gauges of a dead worker (its counts are kept, so
    totals never go down when gunicorn replaces a worker)."""
    folder = os.environ.get(MULTIPROCESS_ENV)
    if folder:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, folder)
