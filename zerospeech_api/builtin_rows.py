"""What `init` guarantees exists: the built-in `scores` evaluator and the `test-challenge`."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from zerospeech_api.db.tables import Benchmark, Evaluator, EvaluatorKind

SCORES_EVALUATOR = "scores"
TEST_CHALLENGE = "test-challenge"


def ensure_builtin_rows(*, session: Session) -> list[str]:
    """Create the missing built-in rows; returns what was created (idempotent)."""
    created: list[str] = []
    scores = session.scalar(select(Evaluator).where(Evaluator.name == SCORES_EVALUATOR))
    if scores is None:
        scores = Evaluator(
            name=SCORES_EVALUATOR,
            kind=EvaluatorKind.SCORES,
            description="Built-in: publishes the participant's own scores entry from the archive.",
        )
        session.add(scores)
        session.flush()
        created.append(f"evaluator {SCORES_EVALUATOR}")
    if session.get(Benchmark, TEST_CHALLENGE) is None:
        session.add(
            Benchmark(
                id=TEST_CHALLENGE,
                label="Test challenge (submissions never reach a public leaderboard)",
                url="https://zerospeech.com",
                start_date=dt.date(2020, 1, 1),
                end_date=None,
                active=True,
                auto_eval=True,
                evaluator_id=scores.id,
                private=True,
            )
        )
        created.append(f"benchmark {TEST_CHALLENGE}")
    return created
