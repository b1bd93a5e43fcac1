"""Sample data for a first look (`init --demo`, `dev --demo`), never created unless asked.

A public, open benchmark `demo-benchmark` (auto-evaluated by the built-in `scores` evaluator, so
a submission of one's own lands on it) and its leaderboard `demo-leaderboard` with column
definitions and a few entries that say in every visible field that they are fake. Everything
goes through the service functions, like an operator's commands would; running it again changes
nothing (an existing benchmark or leaderboard, even edited since, is left as it is).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zerospeech_api.benchmarks.service import create_benchmark
from zerospeech_api.builtin_rows import SCORES_EVALUATOR, ensure_builtin_rows
from zerospeech_api.db.tables import Benchmark, Leaderboard
from zerospeech_api.leaderboards.definition import check_columns, parse_column, update_leaderboard
from zerospeech_api.leaderboards.service import create_leaderboard, import_entries

DEMO_BENCHMARK = "demo-benchmark"
DEMO_LEADERBOARD = "demo-leaderboard"
DEMO_LABEL = "Demo benchmark (sample data: every entry on its leaderboard is fake)"
DEMO_SORT_KEY = "scores.lexical.all.test"
# The shape of the entries `zrc` submissions carry (scores/leaderboard.json), ranked like sLM21.
DEMO_COLUMNS = (
    "scores.lexical.all.test=Lexical (test):.3f",
    "scores.lexical.all.dev=Lexical (dev):.3f",
    "scores.syntactic.test=Syntactic (test):.3f",
)
FAKE = "Fake entry (demo data)"

# (model, author label, date, lexical dev, lexical test, syntactic test)
_FAKE_MODELS = (
    ("demo-bag-of-frames", "Nobody et al. (fake)", "2021-03-22", 0.612, 0.604, 0.531),
    ("demo-cpc-kmeans", "Placeholder & Dummy (fake)", "2021-09-14", 0.701, 0.688, 0.552),
    ("demo-hubert-lstm", "Example Lab (fake)", "2022-05-02", 0.774, 0.769, 0.583),
    ("demo-random-baseline", "Random Baseline (fake)", "2022-11-30", 0.501, 0.498, 0.500),
    ("demo-wav2vec-bert", "Sample Team (fake)", "2023-06-18", 0.819, 0.812, 0.611),
)


def demo_entries() -> list[dict[str, Any]]:
    """The fake leaderboard entries, in the format the `zrc` client submits."""
    entries = []
    for n, (model, author, day, lex_dev, lex_test, syn_test) in enumerate(_FAKE_MODELS, 1):
        entries.append(
            {
                "model_id": model,
                "submission_id": f"demo-entry-{n}",
                "submission_date": f"{day}T12:00:00+00:00",
                "submitted_by": "demo",
                "description": f"{FAKE}: not a real model; the scores are made up.",
                "publication": {
                    "author_short": author,
                    "authors": "Fictional authors (demo data)",
                    "paper_title": None,
                    "paper_url": None,
                    "institution": "Nowhere (demo data)",
                    "team_name": None,
                    "code": None,
                    "DOI": None,
                    "open_science": True,
                },
                "details": {
                    "train_set": "none (demo data)",
                    "benchmarks": [DEMO_BENCHMARK],
                    "gpu_budget": "0",
                    "parameters": {},
                },
                "scores": {
                    "lexical": {"all": {"dev": lex_dev, "test": lex_test}},
                    "syntactic": {"test": syn_test},
                },
                "extras": {},
            }
        )
    return entries


def ensure_demo(*, session: Session) -> list[str]:
    """Create the demo benchmark and leaderboard where missing; returns what was created."""
    created = ensure_builtin_rows(session=session)  # the `scores` evaluator it uses
    if session.get(Benchmark, DEMO_BENCHMARK) is None:
        create_benchmark(
            session=session,
            benchmark_id=DEMO_BENCHMARK,
            label=DEMO_LABEL,
            url="https://zerospeech.com",
            start_date=dt.date(2021, 1, 1),
            auto_eval=True,
            evaluator=SCORES_EVALUATOR,
        )
        created.append(f"benchmark {DEMO_BENCHMARK} (demo)")
    exists = session.scalar(select(Leaderboard.id).where(Leaderboard.label == DEMO_LEADERBOARD))
    if exists is None:
        create_leaderboard(
            session=session,
            label=DEMO_LEADERBOARD,
            benchmark_id=DEMO_BENCHMARK,
            entry_path="scores/leaderboard.json",
            sort_key=DEMO_SORT_KEY,
            descending=True,
        )
        columns = check_columns([parse_column(text) for text in DEMO_COLUMNS])
        update_leaderboard(session=session, label=DEMO_LEADERBOARD, columns=columns)
        count = import_entries(session=session, label=DEMO_LEADERBOARD, entries=demo_entries())
        created.append(f"leaderboard {DEMO_LEADERBOARD} (demo, {count} fake entries)")
    return created
