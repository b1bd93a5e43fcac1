"""`serve` (or `dev`) as a real process on a random port, over a temporary data folder."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from tests.helpers.processes import Process, cli_command, free_port, wait_until_responds


def write_env(path: Path, values: dict[str, str]) -> Path:
    """Write a .env file from a dict of ZR_ settings."""
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    return path


class Server:
    """A running `zerospeech-api serve`; `url` is its base URL."""

    def __init__(
        self,
        env_file: Path,
        *,
        workers: int = 2,
        command: list[str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.env_file = env_file
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            *(command or cli_command()),
            "--env-file",
            str(env_file),
            "serve",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
            *extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZR_")}
        self.process = Process(
            argv, cwd=env_file.parent, env=env, log=env_file.parent / f"serve-{self.port}.log"
        )
        try:
            wait_until_responds(f"{self.url}/health", self.process)
        except BaseException:
            self.process.stop()
            raise

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.process.stop()
