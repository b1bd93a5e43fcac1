"""Run modes: `dev` (uvicorn with reload, and a worker), `serve` (gunicorn), `worker`."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import click

from zerospeech_api.cli.context import CliContext, pass_ctx
from zerospeech_api.metrics.folder import use_metrics_folder

PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}
# `dev` waits this long beyond the worker's own stop grace before it kills the worker.
DEV_WORKER_STOP_MARGIN = 5


def start_dev_worker(env_file: str | None) -> subprocess.Popen[bytes]:
    """One evaluation worker (`worker`, same executable) that gets SIGTERM if `dev` dies."""
    from zerospeech_api.appliance.pyz import program_command
    from zerospeech_api.evaluation.supervisor import die_with_parent

    parent = os.getpid()

    def die_with_dev() -> None:
        die_with_parent(parent, signal.SIGTERM)  # even if dev is killed with SIGKILL

    options = ["--env-file", str(Path(env_file).resolve())] if env_file else []
    return subprocess.Popen([*program_command(), *options, "worker"], preexec_fn=die_with_dev)


def stop_dev_worker(worker: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM (the worker finishes or releases its job within `grace`), then SIGKILL."""
    if worker.poll() is None:
        worker.terminate()
    try:
        worker.wait(grace + DEV_WORKER_STOP_MARGIN)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@click.command(context_settings=PASSTHROUGH)
@click.option(
    "--demo",
    is_flag=True,
    help="Create a public demo benchmark and leaderboard with a few fake entries (once).",
)
@click.option("--no-worker", is_flag=True, help="Run no evaluation worker beside the server.")
@click.argument("uvicorn_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def dev(ctx: CliContext, demo: bool, no_worker: bool, uvicorn_args: tuple[str, ...]) -> None:
    """Development server: uvicorn (auto-reload from a source tree) and one evaluation worker.

    A first run creates what `init` does (.env with a secret, data folder, schema); extra
    arguments go to uvicorn. The worker is stopped with the server, and dies with it if killed.
    """
    import uvicorn.main

    from zerospeech_api.appliance.http_impl import uvicorn_arguments
    from zerospeech_api.appliance.pyz import archive_path
    from zerospeech_api.cli.ops import initialise

    initialise(ctx, demo=demo)
    ctx.prepare_to_run()
    use_metrics_folder(ctx.settings)
    if ctx.env_file:
        # The reloader starts fresh processes: they find the same .env through the environment.
        os.environ["ZR_ENV_FILE"] = str(Path(ctx.env_file).resolve())
    host, _, port = ctx.settings.bind.rpartition(":")
    args = ["zerospeech_api.app:create_configured_app", "--factory"]
    if not {"--host", "--port", "--uds", "--fd"} & set(uvicorn_args):
        args += ["--host", host or "127.0.0.1", "--port", port or "8000"]
    # The code inside a pyz cannot change: reloading is for a source tree.
    if "--no-reload" not in uvicorn_args and archive_path() is None:
        args += ["--reload", "--reload-dir", str(Path(__file__).resolve().parents[1])]
    args += uvicorn_arguments(uvicorn_args)  # httptools on asyncio, as `serve`'s workers
    args += [a for a in uvicorn_args if a != "--no-reload"]
    worker = None if no_worker else start_dev_worker(ctx.env_file)
    # uvicorn raises the SIGTERM it handled again after its shutdown: leave through `finally`
    # (which stops the worker) instead of dying on the default action.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        uvicorn.main.main(args=args, prog_name="zerospeech-api dev")
    finally:
        if worker is not None:
            stop_dev_worker(worker, ctx.settings.worker_stop_grace_seconds)


@click.command(context_settings=PASSTHROUGH)
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def serve(ctx: CliContext, gunicorn_args: tuple[str, ...]) -> None:
    """Production server: gunicorn with uvicorn workers; extra arguments go to gunicorn."""
    from zerospeech_api.appliance.startup import importing

    with importing():
        from zerospeech_api.appliance.gunicorn_app import ZeroSpeechGunicorn
        from zerospeech_api.settings import load_settings

    ctx.prepare_to_run()
    use_metrics_folder(ctx.settings)
    env_file = ctx.env_file
    if env_file:
        # A gunicorn config file that reads the settings (etc/gunicorn.conf.py) finds this .env.
        os.environ["ZR_ENV_FILE"] = str(Path(env_file).resolve())
    ZeroSpeechGunicorn(
        ctx.settings, gunicorn_args, reload_settings=lambda: load_settings(env_file)
    ).run()


@click.command()
@click.option("--once", is_flag=True, help="Process the jobs waiting now, then exit.")
@pass_ctx
def worker(ctx: CliContext, once: bool) -> None:
    """Evaluation worker: claims jobs from the database and evaluates submissions."""
    from zerospeech_api.evaluation.worker import run_worker
    from zerospeech_api.logs import setup_logging

    ctx.prepare_to_run()
    setup_logging(ctx.settings.log_level)
    run_worker(settings=ctx.settings, once=once)


COMMANDS = (dev, serve, worker)
