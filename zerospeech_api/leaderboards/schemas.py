"""Response shapes of the leaderboard routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from zerospeech_api.db.tables import Leaderboard


class LeaderboardInfo(BaseModel):
    """A leaderboard's definition and where to read it."""

    label: str
    benchmark_id: str
    entry_path: str = Field(description="Path of the entry file inside a submission's archive.")
    sort_key: str = Field(description="Dotted key entries are ranked by.")
    order: str = Field(description="`descending` (higher is better) or `ascending`.")
    archived: bool = Field(description="Archived leaderboards take no new entries.")
    entries: int
    last_modified: str
    json_url: str
    csv_url: str

    @classmethod
    def of(cls, leaderboard: Leaderboard, entries: int) -> LeaderboardInfo:
        """The info of a leaderboard that has `entries` entries."""
        return cls(
            label=leaderboard.label,
            benchmark_id=leaderboard.benchmark_id,
            entry_path=leaderboard.entry_path,
            sort_key=leaderboard.sort_key,
            order="descending" if leaderboard.descending else "ascending",
            archived=leaderboard.archived,
            entries=entries,
            last_modified=leaderboard.updated_at.isoformat(),
            json_url=f"/leaderboards/{leaderboard.label}/json",
            csv_url=f"/leaderboards/{leaderboard.label}/csv",
        )


class LeaderboardList(BaseModel):
    """Leaderboards, in the shape of every other list (`{"benchmarks": [...]}`, ...)."""

    leaderboards: list[LeaderboardInfo]

    @classmethod
    def of(cls, rows: Sequence[tuple[Leaderboard, int]]) -> LeaderboardList:
        """The list of (leaderboard, entry count) rows."""
        return cls(leaderboards=[LeaderboardInfo.of(lb, n) for lb, n in rows])


class LeaderboardDocument(BaseModel):
    """A compiled leaderboard: entries ranked best first, each with its 1-based `index`."""

    last_modified: str
    data: list[dict[str, Any]]
