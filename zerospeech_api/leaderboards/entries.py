"""The leaderboard entry format: one strict parser and checker, and a defensive public copy.

An entry is stored in the database, ranked by a dotted key and served to everyone as strict JSON
and as CSV, so whatever cannot go through all of that is refused here, before publication or
import, with a reason the participant can read: NaN and Infinity (not JSON), numbers that do not
fit a float (cannot be ranked), nesting deeper than `MAX_DEPTH`, control characters other than
tab and newline, unpaired surrogates (not encodable as UTF-8). `public_entry` renders entries
stored before these rules so that one old entry never breaks a whole leaderboard.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from typing import Any

MAX_ENTRY_BYTES = 10_000_000
MAX_DEPTH = 32  # objects and lists inside each other; real entries use about 5
MAX_FLOAT_INT = int(sys.float_info.max)

NOT_JSON = "{what} is not valid JSON"
TOO_DEEP = f"{{what}} nests objects and lists more than {MAX_DEPTH} levels deep"
ENTRY_TOO_LARGE = f"leaderboard entry is larger than {MAX_ENTRY_BYTES} bytes"
ENTRY_NOT_JSON = NOT_JSON.format(what="leaderboard entry")
ENTRY_NOT_OBJECT = "leaderboard entry must be a JSON object"
ENTRY_NO_SCORES = "leaderboard entry has no 'scores' object"
ENTRY_TOO_DEEP = TOO_DEEP.format(what="leaderboard entry")
NOT_FINITE = "NaN and Infinity are not JSON numbers (write null for a missing value)"
NUMBER_TOO_LARGE = "number too large to rank (beyond ±1.8e308)"
CONTROL_CHARACTER = "text contains a control character; only tab and newline are allowed"
BAD_UNICODE = "text contains an unpaired surrogate (not valid Unicode)"
NOT_JSON_VALUE = "not a JSON value"

# C0 and C1 controls but tab and newline, DEL, and lone surrogates (a JSON `\ud800` escape).
_REFUSED_CHAR = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class EntryError(Exception):
    """An entry is unusable; the message says why, for the participant."""


def loads(raw: bytes, *, what: str = "leaderboard entry") -> Any:
    """JSON from UTF-8 bytes (BOM allowed); malformed or absurdly nested input is EntryError."""
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise EntryError(f"{NOT_JSON.format(what=what)}: {str(exc)[:200]}") from None
    except RecursionError:
        raise EntryError(TOO_DEEP.format(what=what)) from None


def parse_entry(raw: bytes) -> dict[str, Any]:
    """A leaderboard entry from bytes: a strict JSON object (see `check_value`) with `scores`."""
    if len(raw) > MAX_ENTRY_BYTES:
        raise EntryError(ENTRY_TOO_LARGE)
    value = loads(raw)
    if not isinstance(value, dict):
        raise EntryError(ENTRY_NOT_OBJECT)
    if not isinstance(value.get("scores"), dict):
        raise EntryError(ENTRY_NO_SCORES)
    check_value(value)
    return value


def _show(path: tuple[str | int, ...]) -> str:
    shown = "".join(
        f"[{part}]" if isinstance(part, int) else f".{repr(part)[1:-1][:40]}" for part in path
    ).lstrip(".")
    return f"at {shown[:200]}" if shown else "at the top level"


def _text_problem(text: str) -> str | None:
    bad = _REFUSED_CHAR.search(text)
    if bad is None:
        return None
    problem = BAD_UNICODE if _SURROGATE.match(bad.group()) else CONTROL_CHARACTER
    return f"{problem} (U+{ord(bad.group()):04X})"


def _scalar_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return _text_problem(value)
    if isinstance(value, float):
        return None if math.isfinite(value) else NOT_FINITE
    if isinstance(value, int):
        return None if abs(value) <= MAX_FLOAT_INT else NUMBER_TOO_LARGE
    return f"{NOT_JSON_VALUE} ({type(value).__name__})"


def check_value(value: Any) -> None:
    """Raise EntryError unless `value` can be stored, ranked and encoded as strict JSON.

    Depth first with one iterator per open object or list: memory stays bounded by the depth,
    and a deep value costs no Python recursion before it is refused.
    """
    open_: list[tuple[Iterator[tuple[Any, Any]], tuple[str | int, ...], bool]] = []
    item: Any = value
    path: tuple[str | int, ...] = ()
    while True:
        if isinstance(item, dict | list):
            if len(path) >= MAX_DEPTH:
                raise EntryError(f"{ENTRY_TOO_DEEP} ({_show(path)})")
            if isinstance(item, dict):
                open_.append((iter(item.items()), path, True))
            else:
                open_.append((enumerate(item), path, False))
        else:
            problem = _scalar_problem(item)
            if problem:
                raise EntryError(f"{_show(path)}: {problem}")
        while open_:
            children, parent, is_dict = open_[-1]
            child = next(children, None)
            if child is None:
                open_.pop()
                continue
            key, item = child
            if is_dict:
                problem = _text_problem(key) if isinstance(key, str) else NOT_JSON_VALUE
                if problem:
                    raise EntryError(f"key {_show((*parent, str(key)))}: {problem}")
            path = (*parent, key)
            break
        else:
            return


def public_entry(data: Any) -> dict[str, Any]:
    """A stored entry as the public may see it: itself when it encodes as strict JSON (the
    cheap, usual case), else its `public_copy`; {} for a value that is no object."""
    if not isinstance(data, dict):
        return {}
    try:
        json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError, RecursionError):
        return _public_object(data, 0)
    return data


def _public_text(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def public_copy(value: Any, depth: int = 0) -> Any:
    """`value` as strict JSON carries it: NaN and Infinity become null, unpaired surrogates
    U+FFFD, nesting past `MAX_DEPTH` null (a huge integer is valid JSON: it stays, ranked last).

    For entries stored before the rules of `check_value`; recursion is bounded by `MAX_DEPTH`.
    """
    if isinstance(value, str):
        return _public_text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    if depth >= MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return _public_object(value, depth)
    if isinstance(value, list):
        return [public_copy(v, depth + 1) for v in value]
    return None


def _public_object(value: dict[Any, Any], depth: int) -> dict[str, Any]:
    """`public_copy` of an object at `depth` (below `MAX_DEPTH`): keys become text."""
    return {_public_text(str(k)): public_copy(v, depth + 1) for k, v in value.items()}
