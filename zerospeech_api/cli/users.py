"""`users` admin commands."""

import click


@click.group(name="users")
def group() -> None:
    """Manage users."""
