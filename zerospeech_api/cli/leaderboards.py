"""`leaderboards` admin commands."""

import click


@click.group(name="leaderboards")
def group() -> None:
    """Manage leaderboards."""
