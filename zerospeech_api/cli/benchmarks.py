"""`benchmarks` admin commands."""

import click


@click.group(name="benchmarks")
def group() -> None:
    """Manage benchmarks."""
