"""`read-only on|off|status`: the read-only switch of every host at once (cluster.py)."""

from __future__ import annotations

import click

from zerospeech_api.cli.context import CliContext, pass_ctx
from zerospeech_api.cluster import READ_ONLY_RECHECK_SECONDS, read_only, set_read_only


@click.command(name="read-only")
@click.argument("state", type=click.Choice(["on", "off", "status"]), default="status")
@pass_ctx
def read_only_command(ctx: CliContext, state: str) -> None:
    """Switch read-only mode on or off for every host (writes answer 423), or show it.

    Every server process sees the change within a few seconds; ZR_READ_ONLY=true in a host's
    .env keeps that host read-only whatever this says."""
    if state == "status":
        with ctx.db.session(read_only=True) as session:
            on = read_only(session=session)
    else:
        on = state == "on"
        with ctx.db.transaction() as session:
            set_read_only(session=session, on=on)
    env = " (and ZR_READ_ONLY=true on this host)" if ctx.settings.read_only else ""
    click.echo(f"read-only: {'on' if on else 'off'} for every host{env}")
    if state != "status":
        click.echo(f"every server applies it within {READ_ONLY_RECHECK_SECONDS:g} s")


COMMANDS = (read_only_command,)
