"""`serve` as a real process on a random port, and a `Site`: a data folder with its settings,
database, `serve` and workers."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.cli import cli_process
from tests.helpers.disk import temp_files
from tests.helpers.factories import bearer, events_of, make_user
from tests.helpers.processes import Process, cli_command, free_port, wait_until_responds
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import SubmissionEvent, User
from zerospeech_api.settings import Settings, load_settings


def write_env(path: Path, values: dict[str, str]) -> Path:
    """Write a .env file from a dict of ZR_ settings."""
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    return path


class HttpProcess:
    """A process in its own group answering HTTP on 127.0.0.1:`port` (a server, nginx, a bare
    app under gunicorn), with its output in <cwd>/<name>-<port>.log; `stop()` ends the group."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        port: int,
        cwd: Path,
        env: dict[str, str],
        ready: str | None = "/",
        timeout: float = 30,
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process = Process(argv, cwd=cwd, env=env, log=cwd / f"{name}-{port}.log")
        if ready is not None:
            self.wait_ready(ready, timeout=timeout)

    def wait_ready(self, path: str = "/", *, timeout: float = 30) -> None:
        """Wait until `path` answers 200 (stopped, and raising, if it dies or never does)."""
        try:
            wait_until_responds(f"{self.url}{path}", self.process, timeout)
        except BaseException:
            self.process.stop()
            raise

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)  # type: ignore[arg-type]

    def cpu_seconds(self) -> float:
        """CPU time used so far by the process and its workers."""
        return self.process.cpu_seconds()

    def output(self) -> str:
        return self.process.output()

    def stop(self) -> None:
        self.process.stop()


class Server(HttpProcess):
    """A running `zerospeech-api serve` over `env_file` (`init` done); `url` is its base URL."""

    def __init__(
        self,
        env_file: Path,
        *,
        workers: int = 2,
        command: list[str] | None = None,
        extra_args: tuple[str, ...] | list[str] = (),
        timeout: float = 30,
        env: dict[str, str] | None = None,
    ) -> None:
        self.env_file = env_file
        port = free_port()
        argv = [
            *(command or cli_command()),
            "--env-file",
            str(env_file),
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            *extra_args,
        ]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("ZR_")}
        super().__init__(
            "serve",
            argv,
            port=port,
            cwd=env_file.parent,
            env={**environment, **(env or {})},
            ready="/health",
            timeout=timeout,
        )


def serve_env(
    folder: Path,
    values: dict[str, str] | None = None,
    *,
    name: str = "server.env",
    fast_hash: bool = True,
) -> Path:
    """A .env for a server over `folder`/data: a fresh secret, cheap argon2 unless `fast_hash`
    is off (what is not about hashing need not pay for it), then `values`."""
    defaults = {"ZR_DATA_DIR": str(folder / "data"), "ZR_SECRET_KEY": secrets.token_urlsafe(48)}
    if fast_hash:
        defaults |= {"ZR_ARGON2_TIME_COST": "1", "ZR_ARGON2_MEMORY_KIB": "8192"}
    return write_env(folder / name, {**defaults, **(values or {})})


def init_data(env_file: Path) -> None:
    """`zerospeech-api init` over the .env's data folder, as its own process."""
    cli_process(env_file.parent, "init", env_file=env_file, check=True)


class Site:
    """A data folder ready for `serve` (.env written, `init` done) with its settings and
    database for direct access, and the processes over it: `serve` (started, or restarted, on
    demand) and `worker`s. `close()` stops them all."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.env_file = serve_env(root, env)
        init_data(self.env_file)
        self.settings: Settings = load_settings(self.env_file)
        self.db = Database(self.settings.database)
        self.server: Server | None = None
        self.workers: list[Process] = []

    def start_server(self, *, workers: int = 2) -> Server:
        """Start `serve` (stopping the one before, if any)."""
        if self.server is not None:
            self.server.stop()
        self.server = Server(self.env_file, workers=workers)
        return self.server

    @property
    def url(self) -> str:
        assert self.server is not None, "start_server() first"
        return self.server.url

    @property
    def port(self) -> int:
        assert self.server is not None, "start_server() first"
        return self.server.port

    def worker(self, **env: str) -> Process:
        """Start a `worker` process over this site (extra environment in `env`)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("ZR_")}
        process = Process(
            [*cli_command(), "--env-file", str(self.env_file), "worker"],
            cwd=self.root,
            env={**base, **env},
            log=self.root / f"worker-{len(self.workers)}.log",
        )
        self.workers.append(process)
        return process

    def user(self, **kw: Any) -> User:
        return make_user(self.db, self.settings, **kw)

    def token(self, user: User) -> str:
        """A bearer token of a fresh session of `user`."""
        return bearer(self.db, self.settings, user)["Authorization"].split()[1]

    def events(self, submission_id: str) -> list[SubmissionEvent]:
        return events_of(self.db, submission_id)

    def tmp_files(self) -> list[str]:
        return temp_files(self.settings)

    def close(self) -> None:
        for process in self.workers:
            process.stop()
        if self.server is not None:
            self.server.stop()
        self.db.dispose()
