"""The one command line: `zerospeech-api <command>` (and the seed's `zr-api`, an alias of dev).

Commands are imported when they run, not when the command line starts: `--help`, `version` or
`ctl status` do not pay for SQLAlchemy, FastAPI or the domain services, and `serve` and `worker`
import only what they use. `COMMANDS` names where each command lives and its one-line help, which
is all `--help` needs to list it (tests/cli/test_lazy.py keeps both true to the modules).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

import click

from zerospeech_api import __version__


class LazyCommand(NamedTuple):
    """Where a command is (`module:attribute`) and the first paragraph of its docstring."""

    target: str
    help: str


# name -> where it lives, and its help (the summary --help lists, so the module stays unloaded).
COMMANDS: Mapping[str, LazyCommand] = {
    # run modes
    "dev": LazyCommand(
        "zerospeech_api.cli.run:dev",
        "Development server: uvicorn (auto-reload from a source tree) and one evaluation worker.",
    ),
    "serve": LazyCommand(
        "zerospeech_api.cli.run:serve",
        "Production server: gunicorn with uvicorn workers; extra arguments go to gunicorn.",
    ),
    "worker": LazyCommand(
        "zerospeech_api.cli.run:worker",
        "Evaluation worker: claims jobs from the database and evaluates submissions.",
    ),
    # operations
    "init": LazyCommand(
        "zerospeech_api.cli.ops:init",
        "Create the data folder, a secret in .env (if none), the schema and the built-in rows.",
    ),
    "migrate": LazyCommand(
        "zerospeech_api.cli.ops:migrate", "Apply database migrations up to the newest schema."
    ),
    "check": LazyCommand(
        "zerospeech_api.cli.ops:check",
        "Validate settings, database and data folder; print the effective configuration.",
    ),
    "supervise": LazyCommand(
        "zerospeech_api.cli.ops:supervise",
        "Production: the bundled supervisord keeps `serve` and the evaluation workers running.",
    ),
    "ctl": LazyCommand(
        "zerospeech_api.cli.ops:ctl",
        "supervisorctl for `supervise`: status, restart api, restart all, tail -f api, reload...",
    ),
    "backup": LazyCommand(
        "zerospeech_api.cli.ops:backup",
        "Online backup into TARGET: consistent SQLite copy + manifest of the data folder.",
    ),
    "cleanup-extractions": LazyCommand(
        "zerospeech_api.cli.ops:cleanup_extractions",
        "Remove old pyz extractions under $SHIV_ROOT (~/.shiv) that no process uses any more.",
    ),
    "read-only": LazyCommand(
        "zerospeech_api.cli.cluster:read_only_command",
        "Switch read-only mode on or off for every host (writes answer 423), or show it.",
    ),
    "queue": LazyCommand(
        "zerospeech_api.cli.queue:command",
        "The evaluation queue: waiting and running submissions, workers, and what is stuck.",
    ),
    # admin areas: one click group each
    "users": LazyCommand("zerospeech_api.cli.users:group", "Manage users."),
    "benchmarks": LazyCommand(
        "zerospeech_api.cli.benchmarks:group", "Manage benchmarks (what participants submit to)."
    ),
    "submissions": LazyCommand(
        "zerospeech_api.cli.submissions:group",
        "Manage submissions (find, inspect, unstick, delete).",
    ),
    "evaluators": LazyCommand(
        "zerospeech_api.cli.evaluators:group",
        "Manage evaluators (how a benchmark's submissions are checked).",
    ),
    "leaderboards": LazyCommand("zerospeech_api.cli.leaderboards:group", "Manage leaderboards."),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module when the command is looked up (to run it,
    or for its own --help); the group's --help lists the others from their `LazyCommand.help`."""

    def __init__(self, *args: Any, lazy: Mapping[str, LazyCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.load(cmd_name)
        return self.commands.get(cmd_name)

    def load(self, name: str) -> click.Command:
        """Import the command `name` and add it to the group."""
        from zerospeech_api.appliance.startup import importing

        module_name, _, attribute = self.lazy[name].target.partition(":")
        with importing():
            command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy[name].target} is not a click command")
        self.add_command(command, name)
        return command

    def load_all(self) -> None:
        """Import every command, and any other in the `COMMANDS` tuples of their modules (one
        missing from the mapping still runs; tests/cli/test_lazy.py asks for it to be listed)."""
        for name in self.lazy.keys() - self.commands.keys():
            self.load(name)
        for module_name in {lazy.target.partition(":")[0] for lazy in self.lazy.values()}:
            for command in getattr(sys.modules[module_name], "COMMANDS", ()):
                if command.name not in self.commands:
                    self.add_command(command)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and name not in self.commands and name not in self.lazy:
            # Unknown (a typo?): with every command loaded click can suggest the closest names.
            self.load_all()
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's list of commands, with the summaries of the modules not imported."""
        rows: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            # A stand-in carrying the help of a command not imported: click shortens it alike.
            command = self.commands.get(name) or click.Command(name, help=self.lazy[name].help)
            if not command.hidden:
                rows.append((name, command))
        if not rows:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in rows)
        with formatter.section("Commands"):
            formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="The .env file (default: $ZR_ENV_FILE, else ./.env).",
)
@click.pass_context
def main(ctx: click.Context, env_file: str | None) -> None:
    """ZeroSpeech challenge backend: run the API, the worker, and administer the platform."""
    from zerospeech_api.appliance.pyz import private_archive_after_fork
    from zerospeech_api.cli.context import CliContext

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


def zr_api() -> None:
    """The seed's `zr-api` helper: the same as `zerospeech-api dev`."""
    sys.argv[1:1] = ["dev"]
    main()
