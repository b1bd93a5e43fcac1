"""Terminal output helpers: readable tables and `fail(message)` (exit status 1).

Text that came from users (names, labels, log lines) goes through `printable` before it reaches
the terminal, so escape sequences cannot drive the operator's terminal and newlines cannot forge
table rows; `table`, `fields` and `fail` apply it to everything they print."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

import click

from zerospeech_api.errors import DomainError
from zerospeech_api.security.inputs import UNSAFE_CHARACTER


def printable(value: object) -> str:
    """`str(value)` with control characters (and the others the API refuses: bidi controls,
    line separators, lone surrogates) written as Python escapes, e.g. `\\x1b`, `\\n`."""
    return UNSAFE_CHARACTER.sub(lambda match: repr(match.group())[1:-1], str(value))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` to stderr and exit non-zero."""
    click.echo(f"error: {printable(message)}", err=True)
    raise SystemExit(code)


@contextmanager
def domain_errors() -> Iterator[None]:
    """Service errors (the API's 4xx) become `error: ...` and exit status 1."""
    try:
        yield
    except DomainError as exc:
        fail(exc.detail)


def yes_no(flag: bool) -> str:
    """`yes` or `no`."""
    return "yes" if flag else "no"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print rows as an aligned text table (`(none)` when empty)."""
    text_rows = [["" if cell is None else printable(cell) for cell in row] for row in rows]
    if not text_rows:
        click.echo("(none)")
        return
    widths = [max(len(h), *(len(r[i]) for r in text_rows)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in text_rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def fields(pairs: Iterable[tuple[str, object]]) -> None:
    """Print `key: value` lines, keys aligned."""
    items = [(k, "" if v is None else printable(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    for key, value in items:
        click.echo(f"{key.ljust(width)}  {value}")
