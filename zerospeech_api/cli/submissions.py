"""`submissions` admin commands."""

import click


@click.group(name="submissions")
def group() -> None:
    """Manage submissions."""
