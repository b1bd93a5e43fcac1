"""Operations: `init`, `migrate`, `check`, `supervise`, `ctl`, `backup`, `cleanup-extractions`."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import click

from zerospeech_api.cli.context import CliContext, pass_ctx
from zerospeech_api.cli.output import fail, fields, table
from zerospeech_api.settings import ENV_PREFIX, env_file_path


def _ensure_secret(env_path: Path) -> bool:
    """Append a generated ZR_SECRET_KEY to the .env file unless one is set; True if written."""
    existing = env_path.read_text(encoding="utf-8") if env_path.is_file() else ""
    for line in existing.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == f"{ENV_PREFIX}SECRET_KEY" and value.strip().strip("'\""):
            return False
    if os.environ.get(f"{ENV_PREFIX}SECRET_KEY"):
        return False
    env_path.parent.mkdir(parents=True, exist_ok=True)
    prefix = "" if not existing or existing.endswith("\n") else "\n"
    with open(env_path, "a", encoding="utf-8") as handle:
        handle.write(f"{prefix}{ENV_PREFIX}SECRET_KEY={secrets.token_urlsafe(48)}\n")
    os.chmod(env_path, 0o600)
    return True


def initialise(ctx: CliContext, *, demo: bool = False) -> None:
    """What `init` does (and `dev` on a first run): secret, data folder, schema, built-in rows."""
    from zerospeech_api.builtin_rows import ensure_builtin_rows
    from zerospeech_api.demo import ensure_demo

    env_path = env_file_path(ctx.env_file)
    if _ensure_secret(env_path):
        click.echo(f"wrote a new {ENV_PREFIX}SECRET_KEY to {env_path}")
    ctx._settings = None  # re-read: the secret may be new
    settings = ctx.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with ctx.db.transaction() as session:
        created = ensure_demo(session=session) if demo else ensure_builtin_rows(session=session)
    for line in created:
        click.echo(f"created {line}")


@click.command()
@click.option(
    "--demo",
    is_flag=True,
    help="Also create a public demo benchmark and leaderboard with a few fake entries.",
)
@pass_ctx
def init(ctx: CliContext, demo: bool) -> None:
    """Create the data folder, a secret in .env (if none), the schema and the built-in rows."""
    initialise(ctx, demo=demo)
    settings = ctx.settings
    database = settings.public_items()["database_url"] or "sqlite (embedded)"
    click.echo(f"ready: data in {settings.data_dir.resolve()}, database {database}")


@click.command()
@pass_ctx
def migrate(ctx: CliContext) -> None:
    """Apply database migrations up to the newest schema."""
    from zerospeech_api.db.migrate import current_revision, head_revision

    db = ctx.db  # migrates
    click.echo(f"database at revision {current_revision(db.engine)} (head {head_revision()})")


@click.command()
@pass_ctx
def check(ctx: CliContext) -> None:
    """Validate settings, database and data folder; print the effective configuration."""
    from zerospeech_api.checks import problems as health_problems
    from zerospeech_api.checks import warnings as check_warnings

    settings = ctx.settings
    fields(sorted(settings.public_items().items()))
    for warning in check_warnings(settings=settings):
        click.echo(f"warning: {warning}", err=True)
    problems = health_problems(settings=settings)  # the checks GET /health runs, and more
    if problems:
        fail("; ".join(problems))
    click.echo("check: ok")


def _switch_user(ctx: CliContext, user: str) -> None:
    """Become `user` (supervise started as root), check what it needs, start again as it."""
    from zerospeech_api.appliance import supervisor
    from zerospeech_api.appliance.pyz import archive_path, program_command, shiv_root
    from zerospeech_api.files import finish_extraction

    data_dir = ctx.settings.data_dir.resolve()
    env_file = env_file_path(ctx.env_file).resolve()
    has_env_file = env_file.is_file()  # while root: the user may not even see it
    # A first run's extraction that still runs is finished while root (it renames its folder).
    finish_extraction()
    error = supervisor.become_user(user)
    if error:
        fail(error)
    argv = [*program_command(), *sys.argv[1:]]
    problems = supervisor.access_problems(
        user,
        program=argv,
        env_file=env_file if has_env_file else None,
        data_dir=data_dir,
        directory=Path.cwd(),
        shiv_root=shiv_root() if archive_path() is not None else None,
    )
    if problems:
        fail(f"supervise as {user}: " + "; ".join(problems))
    click.echo(f"supervise: switched to user {user}", err=True)
    # A fresh start as that user: every file, import and pyz extraction from now on is its own.
    os.execv(argv[0], argv)


@click.command()
@click.option(
    "-c",
    "--config",
    "config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Use this supervisord config instead of generating <data>/run/supervisord.conf.",
)
@click.option("--print-config", is_flag=True, help="Print the generated config and exit.")
@pass_ctx
def supervise(ctx: CliContext, config: Path | None, print_config: bool) -> None:
    """Production: the bundled supervisord keeps `serve` and the evaluation workers running.

    Started as root, it first becomes ZR_RUN_AS_USER (or warns that everything runs as root).
    """
    from zerospeech_api.appliance import supervisor
    from zerospeech_api.appliance.pyz import program_command
    from zerospeech_api.files import write_atomically

    settings = ctx.settings
    me = supervisor.current_user()
    plan = supervisor.user_plan(
        wanted=settings.run_as_user, euid=os.geteuid(), current=me, prefix=ENV_PREFIX
    )
    paths = supervisor.layout(settings)
    env_file = env_file_path(ctx.env_file)
    text = supervisor.render_config(
        settings,
        program=program_command(),
        # Children get the same .env by absolute path: their working folder is fixed.
        env_file=env_file.resolve() if env_file.is_file() else None,
        directory=Path.cwd(),
    )
    if print_config:
        click.echo(text, nl=False)
        return
    if plan.error:
        fail(plan.error)
    if plan.switch_to:
        _switch_user(ctx, plan.switch_to)
    if plan.warning:
        click.echo(plan.warning, err=True)
    ctx.prepare_to_run()  # secret, data folder, migrations: once, not in every child
    from zerospeech_api.metrics.folder import use_metrics_folder

    use_metrics_folder(settings)  # a fresh start: no counts of the previous run's processes
    paths.create()
    click.echo(
        f"supervise: supervisord with {config or paths.config}; logs in {paths.logs_dir}", err=True
    )
    if config is None:
        config = paths.config
        write_atomically(config, text)
        who = me if me == supervisor.ROOT else f"{me} (and root)"
        click.echo(supervisor.SOCKET_NOTE.format(run=paths.run_dir, user=who), err=True)
    supervisor.run_supervisord(config.resolve())


@click.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "-c",
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The supervisord config (default: <data>/run/supervisord.conf, written by supervise).",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def ctl(ctx: CliContext, config: Path | None, args: tuple[str, ...]) -> None:
    """supervisorctl for `supervise`: status, restart api, restart all, tail -f api, reload...

    `ctl reload` is not supervisorctl's reload: it sends HUP to gunicorn, which starts new
    workers with the current .env and lets the old ones finish their requests (new code needs
    `ctl restart api`).
    """
    from zerospeech_api.appliance import supervisor

    config = config or supervisor.layout(ctx.settings).config
    problem = supervisor.control_problem(config)
    if problem:
        fail(problem)
    supervisor.run_supervisorctl(config, args or ("status",))


@click.command()
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.option("--no-checksums", is_flag=True, help="Manifest with sizes and mtimes only (fast).")
@pass_ctx
def backup(ctx: CliContext, target: Path, no_checksums: bool) -> None:
    """Online backup into TARGET: consistent SQLite copy + manifest of the data folder."""
    from zerospeech_api.appliance.backup import PG_DUMP_HINT, BackupError, data_size, sqlite_path
    from zerospeech_api.appliance.backup import backup as make_backup

    settings = ctx.settings
    try:
        db_file = sqlite_path(settings.database)
        skip = {db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm")} if db_file else set()
        total = 0 if no_checksums else data_size(settings.data_dir.resolve(), skip)
        with click.progressbar(length=max(total, 1), label="checksums", file=sys.stderr) as bar:
            result = make_backup(settings, target, checksums=not no_checksums, progress=bar.update)
    except BackupError as exc:
        fail(str(exc))
    click.echo(f"backup: {result.folder}")
    click.echo(f"manifest: {result.files} files, {result.total_bytes} bytes")
    if not result.database_copied:
        fail(PG_DUMP_HINT)
    click.echo(f"database: {result.folder / 'zerospeech.db'} (online copy, integrity ok)")


@click.command(name="cleanup-extractions")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def cleanup_extractions(dry_run: bool) -> None:
    """Remove old pyz extractions under $SHIV_ROOT (~/.shiv) that no process uses any more."""
    from zerospeech_api.appliance.pyz import find_extractions, remove_extraction, shiv_root

    root = shiv_root()
    found = find_extractions(root)
    rows = []
    for extraction in found:
        if extraction.current:
            action = "kept (running build)"
        elif extraction.in_use:
            action = "kept (in use)"
        elif dry_run:
            action = "would remove"
        else:
            action = "removed" if remove_extraction(extraction) else "kept (locked)"
        rows.append((extraction.path.name, action))
    click.echo(f"shiv root: {root}")
    table(("extraction", "action"), rows)


COMMANDS = (init, migrate, check, supervise, ctl, backup, cleanup_extractions)
