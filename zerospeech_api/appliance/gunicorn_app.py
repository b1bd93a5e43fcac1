"""gunicorn as a library: options from Settings, extra command-line args, app from the factory."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence
from typing import Any

from gunicorn.app.base import Application
from uvicorn_worker import UvicornWorker

from zerospeech_api.appliance.http_impl import uvicorn_implementation
from zerospeech_api.appliance.startup import freeze_for_workers, importing
from zerospeech_api.evaluation.supervisor import die_with_parent
from zerospeech_api.metrics.folder import mark_worker_dead
from zerospeech_api.settings import Settings, SettingsError

log = logging.getLogger("zerospeech_api.serve")

WORKER_CLASS = "zerospeech_api.appliance.gunicorn_app.ZeroSpeechWorker"


class ZeroSpeechWorker(UvicornWorker):
    """uvicorn worker on httptools (h11 if it cannot be imported) and asyncio (http_impl.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Chosen in each worker, after the fork: the master does not import httptools.
        self.CONFIG_KWARGS = uvicorn_implementation()
        super().__init__(*args, **kwargs)


def die_with_master(_server: Any, worker: Any) -> None:
    """post_fork: a worker gets SIGTERM (graceful) when its master dies, even by SIGKILL.

    uvicorn workers never look at their parent: orphans would keep the listening socket, so the
    master that supervisord starts again could not bind. With the signal they finish their
    in-flight requests and exit, and the new master takes over.
    """
    die_with_parent(worker.ppid, signal.SIGTERM)


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """The gunicorn settings derived from ours."""
    return {
        "bind": [settings.bind],
        "workers": settings.workers,
        "worker_class": WORKER_CLASS,
        "timeout": settings.timeout,
        "graceful_timeout": settings.graceful_timeout,
        "keepalive": settings.keepalive,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "proc_name": "zerospeech-api",
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": settings.log_level,
        "post_fork": die_with_master,
        "child_exit": mark_worker_dead,  # metrics (prometheus-client's multiprocess mode)
        # Body size is limited by the app (BodySizeLimitMiddleware), before it is read.
    }


class ZeroSpeechGunicorn(Application):
    """`zerospeech-api serve`: our settings first, then `-c FILE`, then extra gunicorn args.

    With `reload_settings`, a HUP (`ctl reload`) reads the settings again, so the new workers
    see an edited .env (read-only mode on or off, log level...) without a restart.
    """

    def __init__(
        self,
        settings: Settings,
        extra_args: Sequence[str] = (),
        reload_settings: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self.extra_args = list(extra_args)
        self.reload_settings = reload_settings
        self._configured = False
        super().__init__(
            usage="zerospeech-api serve [gunicorn options]", prog="zerospeech-api serve"
        )

    def load_config(self) -> None:
        if self._configured and self.reload_settings is not None:
            try:
                self.settings = self.reload_settings()
            except SettingsError as exc:
                log.error("reload: keeping the previous settings: %s", exc)
        self._configured = True
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)
        parser = self.cfg.parser()
        args = parser.parse_args(self.extra_args)
        if args.config:
            self.load_config_from_file(args.config)
        for key, value in vars(args).items():
            if value is None or key in ("args", "config"):
                continue
            if key in self.cfg.settings:
                self.cfg.set(key.lower(), value)

    def run(self) -> None:
        """Import the app's modules, then let gunicorn's arbiter fork the workers.

        Forked after this, the workers start with the modules loaded (and share their memory)
        instead of each importing them at the same moment: a second of CPU each on a small
        machine, at every start and reload. Each worker still builds its own app (`load`) from
        the settings of the moment; the code is the master's, so new code needs a restart
        (`ctl restart api`), not a reload.
        """
        with importing():
            # And anyio's asyncio backend: each worker would load it in its lifespan, before
            # /health.
            import anyio._backends._asyncio  # noqa: F401

            import zerospeech_api.app  # noqa: F401
        freeze_for_workers()
        super().run()

    def load(self) -> Any:
        from zerospeech_api.app import create_app
        from zerospeech_api.logs import setup_logging

        setup_logging(self.settings.log_level)
        return create_app(self.settings)
