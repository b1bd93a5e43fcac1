"""The server-side chart: points over submission dates and the best-so-far line."""

from __future__ import annotations

import datetime as dt

from zerospeech_api.pages.chart import build_chart, date_ticks, nice_ticks

KEY = "scores.x"


def entry(rank: int, day: str | None, score: float | None) -> dict:
    return {"index": rank, "model_id": f"m{rank}", "submission_date": day, "scores": {"x": score}}


def test_best_line_follows_the_best_score_so_far_in_either_direction() -> None:
    entries = [
        entry(1, "2021-03-01", 90.0),
        entry(2, "2021-02-01", 80.0),
        entry(3, "2021-01-01", 70.0),
        entry(4, "2021-01-15", 60.0),
    ]
    higher = build_chart(entries, sort_key=KEY, descending=True, y_label="X")
    assert higher is not None
    best = {p.title.split()[0] for p in higher.points if p.best}
    assert best == {"#3", "#2", "#1"}  # each beat the earlier best; #4 did not
    assert higher.best_path.startswith("M") and higher.best_path.count("V") == 2
    assert higher.best_path.endswith(f"H{higher.right}")  # carried to the right edge
    lower = build_chart(entries, sort_key=KEY, descending=False, y_label="X")
    assert {p.title.split()[0] for p in lower.points if p.best} == {"#3", "#4"}
    # Every point inside the plot area, and a link to its table row.
    for point in higher.points:
        assert higher.left <= point.x <= higher.right and higher.top <= point.y <= higher.bottom
        assert point.href.startswith("#rank-")


def test_entries_without_a_date_or_score_are_skipped_and_counted() -> None:
    entries = [entry(1, "2021-03-01", 5.0), entry(2, None, 4.0), entry(3, "not a date", 3.0)]
    entries.append(entry(4, "2021-03-01T10:00:00Z", None))
    chart = build_chart(entries, sort_key=KEY, descending=True, y_label="X")
    assert chart is not None and len(chart.points) == 1 and chart.skipped == 3
    assert build_chart(entries[1:], sort_key=KEY, descending=True, y_label="X") is None
    assert build_chart([], sort_key=KEY, descending=True, y_label="X") is None


def test_axes_have_round_ticks() -> None:
    assert nice_ticks(50.2, 93.1) == [50, 60, 70, 80, 90, 100]
    assert nice_ticks(0.12, 0.18) == [0.12, 0.14, 0.16, 0.18]
    utc = dt.UTC
    labels = [
        label
        for _, label in date_ticks(
            dt.datetime(2015, 3, 1, tzinfo=utc), dt.datetime(2024, 6, 1, tzinfo=utc)
        )
    ]
    assert labels == ["2016", "2018", "2020", "2022", "2024"]
    days = date_ticks(dt.datetime(2021, 1, 5, tzinfo=utc), dt.datetime(2021, 1, 9, tzinfo=utc))
    assert [label for _, label in days] == [
        "2021-01-05",
        "2021-01-06",
        "2021-01-07",
        "2021-01-08",
        "2021-01-09",
    ]
