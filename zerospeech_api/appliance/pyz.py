"""Facts about the running pyz (filled in by the appliance work)."""

from __future__ import annotations


def build_id() -> str | None:
    """The build id of the running pyz, or None outside one."""
    return None
