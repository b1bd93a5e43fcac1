"""The shipped nginx configs stream only upload parts unbuffered: nginx never passes a request
it has sent unbuffered to another server, so anywhere else a GET taken by a dying worker would
be answered 502 instead of retried (tests/e2e/test_appliance.py kills a worker under load)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "etc" / "nginx").glob("*.conf"))
UPLOAD = "/submissions/3f2b9c1d0a/content/add"


def blocks_with(text: str, directive: str) -> list[str]:
    """The header of the block (`server`, `location ...`) around each use of `directive`."""
    found = []
    for match in re.finditer(re.escape(directive), text):
        depth, position = 0, match.start()
        while position > 0:
            position -= 1
            if text[position] == "}":
                depth += 1
            elif text[position] == "{":
                if depth == 0:
                    break
                depth -= 1
        start = text.rfind("\n", 0, position) + 1
        found.append(text[start:position].strip())
    return found


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_only_upload_parts_are_streamed_unbuffered(config: Path) -> None:
    text = config.read_text()
    (block,) = blocks_with(text, "proxy_request_buffering off;")
    kind, pattern = block.split(maxsplit=2)[1:]
    assert kind == "~"
    assert re.search(pattern, UPLOAD)
    for other in ("/health", "/submissions/3f2b9c1d0a/content/status", "/leaderboards/x/json"):
        assert not re.search(pattern, other), other
