"""Response shapes of the benchmark routes (the zrc client reads `/benchmarks/{id}/info`)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field


class BenchmarkInfo(BaseModel):
    """A benchmark as the zrc client expects it; keys after `auto_eval` are extras."""

    label: str
    start_date: dt.date = Field(description="First day submissions are accepted (YYYY-MM-DD).")
    end_date: dt.date | None = Field(description="Last day submissions are accepted, or null.")
    active: bool
    url: str
    evaluator: int | None = Field(description="Id of the evaluator that checks submissions.")
    auto_eval: bool = Field(description="Uploaded submissions are evaluated automatically.")
    id: str
    is_open: bool = Field(description="Active, started and not ended: submissions accepted now.")
    private: bool = Field(description="Entries never reach a public leaderboard.")
    quota: str | None = Field(description="Per-user submissions per period, e.g. `3/1d`.")
    max_archive_bytes: int = Field(description="Largest archive accepted, in bytes.")


class BenchmarkList(BaseModel):
    benchmarks: list[BenchmarkInfo]


class QuotaInfo(BaseModel):
    """A user's quota on one open benchmark (all null but `used` when it has no quota)."""

    benchmark: str
    label: str
    limit: int | None = Field(description="Submissions allowed per period, null without a quota.")
    period: str | None = Field(description="The sliding period, e.g. `1d`.")
    used: int = Field(
        description="Submissions in the window that count (not failed, invalid, "
        "cancelled or deleted)."
    )
    remaining: int | None = Field(description="Submissions still possible now.")
    next_slot_at: dt.datetime | None = Field(
        description="When one more submission becomes possible (UTC), null when nothing is used."
    )


class QuotaList(BaseModel):
    username: str
    quotas: list[QuotaInfo]
