"""uvicorn's HTTP parser and event loop: httptools (else h11) on asyncio.

httptools, a C HTTP parser, is a dependency because uvicorn serves more requests per CPU second
with it than with the pure-Python h11 (bench/bench_http.py). It is a binary wheel: a platform
without it (or a pyz built for another one) still serves, on h11, with a warning saying so.

The event loop stays asyncio on purpose: uvloop was measured too (faster still), but its
workers reset connections they had accepted when they stop, so a graceful reload (`ctl
reload`, HUP) dropped requests that h11 or httptools on asyncio never drop (a HUP test of
tests/e2e/test_pyz_reload.py: 7-9 failed requests of ~600 over 12 reloads, against none).
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger("zerospeech_api.serve")

# uvicorn option -> (preferred implementation and the module it needs, fallback)
CHOICES = {"http": ("httptools", "h11")}
LOOP = "asyncio"  # not uvloop: see above


def uvicorn_implementation() -> dict[str, str]:
    """uvicorn's `http` and `loop` options: httptools if it can be imported, else h11 (logged
    as a warning); asyncio."""
    chosen = {"loop": LOOP}
    for option, (fast, fallback) in CHOICES.items():
        try:
            importlib.import_module(fast)
        except ImportError as exc:
            log.warning("%s cannot be imported (%s): uvicorn runs on %s", fast, exc, fallback)
            chosen[option] = fallback
        else:
            chosen[option] = fast
    return chosen


def uvicorn_arguments(given: tuple[str, ...] | list[str]) -> list[str]:
    """`--http X --loop Y` for the uvicorn command line, except the options already `given`."""
    arguments = []
    for option, value in uvicorn_implementation().items():
        flag = f"--{option}"
        if not any(arg == flag or arg.startswith(flag + "=") for arg in given):
            arguments += [flag, value]
    return arguments
