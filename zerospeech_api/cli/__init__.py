"""The one command line: `zerospeech-api <command>` (and the seed's `zr-api`, an alias of dev)."""

from __future__ import annotations

import sys

import click

from zerospeech_api import __version__
from zerospeech_api.appliance.pyz import private_archive_after_fork
from zerospeech_api.cli import ops, run
from zerospeech_api.cli.context import CliContext


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="The .env file (default: $ZR_ENV_FILE, else ./.env).",
)
@click.pass_context
def main(ctx: click.Context, env_file: str | None) -> None:
    """ZeroSpeech challenge backend: run the API, the worker, and administer the platform."""
    # Before any command can fork (gunicorn workers): each child gets its own handle on the pyz.
    private_archive_after_fork()
    ctx.obj = CliContext(env_file=env_file)
    ctx.call_on_close(ctx.obj.close)


@main.command()
def version() -> None:
    """Print the version (and the build id when running from the pyz)."""
    from zerospeech_api.appliance.pyz import build_id

    build = build_id()
    click.echo(f"zerospeech-api {__version__}" + (f" (build {build[:12]})" if build else ""))


for command in (*run.COMMANDS, *ops.COMMANDS):
    main.add_command(command)


def _register_groups() -> None:
    # Each admin area is one click group in its own module.
    from zerospeech_api.cli import benchmarks, evaluators, leaderboards, submissions, users

    for module in (users, benchmarks, submissions, evaluators, leaderboards):
        main.add_command(module.group)
    from zerospeech_api.cli import queue

    main.add_command(queue.command)


_register_groups()


def zr_api() -> None:
    """The seed's `zr-api` helper: the same as `zerospeech-api dev`."""
    sys.argv[1:1] = ["dev"]
    main()
