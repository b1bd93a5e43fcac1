"""The evaluation worker loop (built in the evaluation issue)."""

from __future__ import annotations

from zerospeech_api.settings import Settings


def run_worker(*, settings: Settings, once: bool = False) -> None:
    """Claim and run evaluation jobs until stopped."""
    raise NotImplementedError("the evaluation worker is not built yet")
