"""Start-up imports without the cyclic garbage collector.

Importing the app creates hundreds of thousands of objects (classes, pydantic schemas, SQLAlchemy
mappings) and almost no garbage, yet each allocation burst triggers a collection that scans them
all again: about a tenth of the import time. `importing` pauses the collector around the
imports of a start; `freeze_for_workers` then moves what was loaded to the permanent generation
before gunicorn forks, as the `gc.freeze` documentation advises for pre-fork servers: the
workers' collections never scan those objects (nor write to their pages, which stay shared
with the master).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def importing() -> Iterator[None]:
    """Pause the cyclic garbage collector (if it runs) for the block; it resumes on the way out,
    even on an error."""
    running = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if running:
            gc.enable()


def freeze_for_workers() -> None:
    """Move every object tracked now to the permanent generation (before forking workers)."""
    gc.freeze()
