"""The leaderboard chart, computed on the server for an inline SVG (no script, no library).

Each entry is a point at its submission date and ranking score; the line is the best score so
far over time (highest or lowest, as the leaderboard ranks). This module only computes
geometry and texts; the template draws them, so every text is escaped there.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zerospeech_api.leaderboards.definition import format_number
from zerospeech_api.leaderboards.service import dotted_get, sort_value

WIDTH, HEIGHT = 860, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 16, 40  # margins around the plot area
DAY = 86400.0
# Candidate x-axis steps: (months, days) — calendar months for the long ones.
X_STEPS = ((0, 1), (0, 7), (1, 0), (3, 0), (6, 0), (12, 0), (24, 0), (60, 0))
MAX_X_TICKS = 8


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    title: str
    href: str
    best: bool


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class Chart:
    """Everything the template draws, in SVG user units."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    points: list[Point]
    best_path: str
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    y_label: str
    skipped: int


def parse_date(value: Any) -> dt.datetime | None:
    """An ISO date or date-time as aware UTC (naive values are UTC), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2 or 5 times a power of ten apart)."""
    if high <= low:
        low, high = low - 1, high + 1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value < high + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _add_months(moment: dt.datetime, months: int) -> dt.datetime:
    total = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=total // 12, month=total % 12 + 1, day=1)


def date_ticks(start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, str]]:
    """At most MAX_X_TICKS round dates between start and end, labelled for their step."""
    span_days = (end - start).total_seconds() / DAY
    months, days = next(
        ((m, d) for m, d in X_STEPS if (m * 30.4 or d) * MAX_X_TICKS >= span_days), X_STEPS[-1]
    )
    current = start.replace(hour=0, minute=0, second=0, microsecond=0)
    if months:
        current = current.replace(day=1)
        # The first month boundary inside the range, on a multiple of the step (January for years).
        while current < start or (current.month - 1) % min(months, 12):
            current = _add_months(current, 1)
    elif current < start:
        current += dt.timedelta(days=1)
    fmt = "%Y" if months >= 12 else "%Y-%m" if months else "%Y-%m-%d"
    ticks: list[tuple[dt.datetime, str]] = []
    while current <= end and len(ticks) < MAX_X_TICKS + 1:
        ticks.append((current, current.strftime(fmt)))
        current = _add_months(current, months) if months else current + dt.timedelta(days=days)
    return ticks


def tick_labels(values: list[float], number_format: str) -> list[str]:
    """Labels of the y ticks: as many decimals as the step needs (percent and exponent formats
    are kept: they change what the number reads as)."""
    if number_format.endswith(("%", "e")):
        return [format_number(v, number_format) for v in values]
    step = values[1] - values[0] if len(values) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step)))
    return [f"{v:.{decimals}f}" for v in values]


def build_chart(
    entries: Sequence[dict[str, Any]],
    *,
    sort_key: str,
    descending: bool,
    y_label: str,
    number_format: str = "",
) -> Chart | None:
    """The chart of ranked entries, or None when no entry has both a date and a score."""
    data = []
    for entry in entries:
        moment = parse_date(entry.get("submission_date"))
        score = sort_value(entry, sort_key)
        if moment is not None and score is not None:
            data.append((moment, score, entry))
    if not data:
        return None
    data.sort(key=lambda item: (item[0], item[2].get("index") or 0))
    start, end = data[0][0], data[-1][0]
    if (end - start).total_seconds() < DAY:
        start, end = start - dt.timedelta(days=1), end + dt.timedelta(days=1)
    scores = [score for _, score, _ in data]
    y_values = nice_ticks(min(scores), max(scores))
    low, high = y_values[0], y_values[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(moment: dt.datetime) -> float:
        return round(
            LEFT + (moment - start).total_seconds() / (end - start).total_seconds() * plot_w, 1
        )

    def y_of(value: float) -> float:
        return round(TOP + (high - value) / (high - low) * plot_h, 1)

    points: list[Point] = []
    path: list[str] = []
    best: float | None = None
    for moment, score, entry in data:
        improves = best is None or (score > best if descending else score < best)
        x, y = x_of(moment), y_of(score)
        if improves:
            best = score
            path.append(f"M{x},{y}" if not path else f"H{x}V{y}")
        rank = entry.get("index")
        who = dotted_get(entry, "publication.author_short") or entry.get("submitted_by") or ""
        title = (
            f"#{rank} {entry.get('model_id') or ''} {('(' + str(who) + ')') if who else ''}: "
            f"{format_number(score, number_format)}, {moment.date().isoformat()}"
        )
        points.append(Point(x, y, " ".join(title.split()), f"#rank-{rank}", improves))
    path.append(f"H{LEFT + plot_w}")
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right=LEFT + plot_w,
        top=TOP,
        bottom=TOP + plot_h,
        # Best points last, so they are drawn on top of the others.
        points=sorted(points, key=lambda p: p.best),
        best_path="".join(path),
        x_ticks=[Tick(x_of(moment), label) for moment, label in date_ticks(start, end)],
        y_ticks=[
            Tick(y_of(v), label)
            for v, label in zip(y_values, tick_labels(y_values, number_format), strict=True)
        ],
        y_label=y_label,
        skipped=len(entries) - len(data),
    )
