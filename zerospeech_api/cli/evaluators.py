"""`evaluators` admin commands."""

import click


@click.group(name="evaluators")
def group() -> None:
    """Manage evaluators."""
