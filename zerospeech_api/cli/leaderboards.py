"""`leaderboards` admin commands: create, list, show, archive, rebuild, import, export."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict

import click

from zerospeech_api.cli.context import CliContext, pass_ctx
from zerospeech_api.cli.output import domain_errors, fail, fields, table
from zerospeech_api.files import write_atomically
from zerospeech_api.leaderboards import definition, service

COLUMN_OPTION = click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="KEY=LABEL[:FORMAT]",
    help="A score column of the web page, in order (repeat it), e.g. "
    "'scores.lexical.all.test=Lexical (test):.2f'; FORMAT like .2f, .1%, .3e or ,d. "
    "Without it the page shows every numeric score.",
)


@contextmanager
def progress(length: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (stdout may carry an export)."""
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


@click.group(name="leaderboards")
def group() -> None:
    """Manage leaderboards."""


@group.command()
@click.argument("label")
@click.option("--benchmark", "benchmark_id", required=True, help="Benchmark id.")
@click.option(
    "--entry-path",
    default="scores/leaderboard.json",
    show_default=True,
    help="Path of the entry file inside a submission's archive.",
)
@click.option(
    "--sort-key", required=True, help="Dotted key to rank by, e.g. scores.lexical.all.test."
)
@click.option(
    "--ascending/--descending",
    default=False,
    help="Ranking direction (default: descending, higher is better).",
)
@COLUMN_OPTION
@pass_ctx
def create(
    ctx: CliContext,
    label: str,
    benchmark_id: str,
    entry_path: str,
    sort_key: str,
    ascending: bool,
    columns: tuple[str, ...],
) -> None:
    """Create a leaderboard of a benchmark."""
    with domain_errors(), ctx.db.transaction() as session:
        parsed = definition.check_columns([definition.parse_column(c) for c in columns])
        service.create_leaderboard(
            session=session,
            label=label,
            benchmark_id=benchmark_id,
            entry_path=entry_path,
            sort_key=sort_key,
            descending=not ascending,
        )
        if parsed:
            definition.update_leaderboard(session=session, label=label, columns=parsed)
    click.echo(f"created leaderboard {label}")


class _Changes(TypedDict, total=False):
    """What `update` changes: keywords of definition.update_leaderboard."""

    sort_key: str
    descending: bool
    columns: list[definition.Column] | None


@group.command()
@click.argument("label")
@click.option("--sort-key", default=None, help="New dotted key to rank by.")
@click.option(
    "--ascending/--descending", default=None, help="New ranking direction (default: unchanged)."
)
@COLUMN_OPTION
@click.option(
    "--default-columns", is_flag=True, help="Forget the columns: show every numeric score."
)
@pass_ctx
def update(
    ctx: CliContext,
    label: str,
    sort_key: str | None,
    ascending: bool | None,
    columns: tuple[str, ...],
    default_columns: bool,
) -> None:
    """Change how a leaderboard ranks and which score columns its web page shows."""
    if columns and default_columns:
        fail("give --column or --default-columns, not both")
    changes: _Changes = {}
    if sort_key is not None:
        changes["sort_key"] = sort_key
    if ascending is not None:
        changes["descending"] = not ascending
    if default_columns:
        changes["columns"] = None
    if not changes and not columns:
        fail("nothing to change: give --sort-key, --ascending/--descending or --column")
    with domain_errors():
        if columns:
            changes["columns"] = [definition.parse_column(c) for c in columns]
        with ctx.db.transaction() as session:
            definition.update_leaderboard(session=session, label=label, **changes)
    click.echo(f"updated leaderboard {label}")


@group.command(name="list")
@click.option("--benchmark", "benchmark_id", default=None, help="Only this benchmark's.")
@pass_ctx
def list_(ctx: CliContext, benchmark_id: str | None) -> None:
    """Every leaderboard with its entry count."""
    with ctx.db.session(read_only=True) as session:
        rows = [
            (
                lb.label,
                lb.benchmark_id,
                n,
                lb.sort_key,
                "desc" if lb.descending else "asc",
                "yes" if lb.archived else "",
                lb.entry_path,
            )
            for lb, n in service.list_leaderboards(
                session=session, benchmark_id=benchmark_id, public=False
            )
        ]
    table(["label", "benchmark", "entries", "sort key", "order", "archived", "entry path"], rows)


@group.command()
@click.argument("label")
@click.option("--top", default=5, show_default=True, help="How many ranked entries to show.")
@pass_ctx
def show(ctx: CliContext, label: str, top: int) -> None:
    """One leaderboard and its best entries."""
    with domain_errors(), ctx.db.session(read_only=True) as session:
        lb = service.get_leaderboard(session=session, label=label, public=False)
        compiled = service.compile_leaderboard(session=session, leaderboard=lb)
        fields(
            [
                ("label", lb.label),
                ("benchmark", lb.benchmark_id),
                ("entry path", lb.entry_path),
                ("sort key", lb.sort_key),
                ("order", "descending" if lb.descending else "ascending"),
                ("archived", "yes" if lb.archived else "no"),
                ("entries", len(compiled["data"])),
                ("last modified", compiled["last_modified"]),
                ("public JSON", f"/leaderboards/{lb.label}/json"),
            ]
        )
        rows = [
            (
                e["index"],
                service.dotted_get(e, lb.sort_key),
                e.get("submission_id"),
                e.get("submitted_by"),
                service.dotted_get(e, "publication.author_short"),
            )
            for e in compiled["data"][: max(0, top)]
        ]
    click.echo("")
    table(["rank", "score", "submission", "submitted by", "author"], rows)


@group.command()
@click.argument("label")
@click.option("--undo", is_flag=True, help="Re-open an archived leaderboard.")
@pass_ctx
def archive(ctx: CliContext, label: str, undo: bool) -> None:
    """Archive a leaderboard: it stays readable but takes no new entries."""
    with domain_errors(), ctx.db.transaction() as session:
        service.set_archived(session=session, label=label, archived=not undo)
    click.echo(f"leaderboard {label} {'re-opened' if undo else 'archived'}")


@group.command()
@click.argument("label")
@pass_ctx
def rebuild(ctx: CliContext, label: str) -> None:
    """Re-collect the entries of completed submissions (imported entries are kept)."""
    with domain_errors():
        with ctx.db.session(read_only=True) as session:
            total = service.submissions_to_rebuild(session=session, label=label)
        with (
            progress(total, f"rebuilding {label}") as step,
            ctx.db.transaction() as session,
        ):
            count = service.rebuild(
                session=session, settings=ctx.settings, label=label, progress=step
            )
    click.echo(f"leaderboard {label}: {count} entries from {total} completed submissions")


@group.command(name="import")
@click.argument("label")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_ctx
def import_(ctx: CliContext, label: str, file: Path) -> None:
    """Load a historic {"last_modified", "data": [...]} file (replaces earlier imported entries)."""
    with domain_errors():
        entries = service.parse_document(file.read_bytes())
        with progress(len(entries), f"importing {label}") as step, ctx.db.transaction() as s:
            count = service.import_entries(session=s, label=label, entries=entries, progress=step)
    click.echo(f"imported {count} entries into {label}")


@group.command()
@click.argument("label")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (atomically); default: standard output.",
)
@pass_ctx
def export(ctx: CliContext, label: str, fmt: str, output: Path | None) -> None:
    """Write the compiled leaderboard as JSON or CSV."""
    with domain_errors(), ctx.db.session(read_only=True) as session:
        lb = service.get_leaderboard(session=session, label=label, public=False)
        compiled = service.compile_leaderboard(session=session, leaderboard=lb)
    if fmt == "csv":
        data = service.to_csv(compiled).encode("utf-8")
    else:
        # Strict like the public JSON: compile already turned what JSON cannot carry into null.
        text = json.dumps(compiled, ensure_ascii=False, indent=2, allow_nan=False)
        data = (text + "\n").encode("utf-8")
    if output is None:
        click.echo(data.decode("utf-8"), nl=False)
        return
    write_atomically(output.resolve(), data, mode=0o644)
    click.echo(f"wrote {len(compiled['data'])} entries to {output}", err=True)
