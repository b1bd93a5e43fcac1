"""Run modes: `dev` (uvicorn with reload), `serve` (gunicorn), `worker` (evaluation)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from zerospeech_api.cli.context import CliContext, pass_ctx

PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


def _prepare(ctx: CliContext) -> None:
    """Fail early on bad settings, create the data folder and migrate (once, before forking)."""
    settings = ctx.settings
    try:
        settings.require_secret()
    except Exception as exc:
        raise click.ClickException(str(exc)) from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ctx.db.dispose()  # touching ctx.db applies the migrations


@click.command(context_settings=PASSTHROUGH)
@click.argument("uvicorn_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def dev(ctx: CliContext, uvicorn_args: tuple[str, ...]) -> None:
    """Development server: uvicorn with auto-reload; extra arguments go to uvicorn."""
    import uvicorn.main

    _prepare(ctx)
    if ctx.env_file:
        # The reloader starts fresh processes: they find the same .env through the environment.
        os.environ["ZR_ENV_FILE"] = str(Path(ctx.env_file).resolve())
    host, _, port = ctx.settings.bind.rpartition(":")
    args = ["zerospeech_api.app:create_configured_app", "--factory"]
    if not {"--host", "--port", "--uds", "--fd"} & set(uvicorn_args):
        args += ["--host", host or "127.0.0.1", "--port", port or "8000"]
    if "--no-reload" not in uvicorn_args:
        args += ["--reload", "--reload-dir", str(Path(__file__).resolve().parents[1])]
    args += [a for a in uvicorn_args if a != "--no-reload"]
    uvicorn.main.main(args=args, prog_name="zerospeech-api dev")


@click.command(context_settings=PASSTHROUGH)
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def serve(ctx: CliContext, gunicorn_args: tuple[str, ...]) -> None:
    """Production server: gunicorn with uvicorn workers; extra arguments go to gunicorn."""
    from zerospeech_api.appliance.gunicorn_app import ZeroSpeechGunicorn
    from zerospeech_api.settings import load_settings

    _prepare(ctx)
    env_file = ctx.env_file
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

    _prepare(ctx)
    setup_logging(ctx.settings.log_level)
    run_worker(settings=ctx.settings, once=once)


COMMANDS = (dev, serve, worker)
