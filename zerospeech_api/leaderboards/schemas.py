"""Response shapes of the leaderboard routes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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


class LeaderboardList(BaseModel):
    """Leaderboards, in the shape of every other list (`{"benchmarks": [...]}`, ...)."""

    leaderboards: list[LeaderboardInfo]


class LeaderboardDocument(BaseModel):
    """A compiled leaderboard: entries ranked best first, each with its 1-based `index`."""

    last_modified: str
    data: list[dict[str, Any]]
