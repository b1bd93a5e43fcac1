"""The normalised key under which names (usernames, e-mail addresses) are unique.

It lives with the tables because the unique indexes and migration 0002 store it: changing it
changes what the database holds.
"""

from __future__ import annotations

import unicodedata


def name_key(value: str) -> str:
    """The form under which names are unique: NFKC, case-folded (so `ÉLODIE` and `élodie`,
    or `ß` and `SS`, are one name), as Unicode recommends for caseless matching."""
    folded = unicodedata.normalize("NFKC", value).casefold()
    return unicodedata.normalize("NFKC", folded).strip()
