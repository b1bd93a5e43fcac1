"""SQLAlchemy 2 tables of the whole domain (ORM classes are *tables*; *model* is an ML model)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from zerospeech_api.db.keys import name_key

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores aware datetimes as UTC and always returns aware UTC values (SQLite drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON}


class SubmissionStatus(enum.StrEnum):
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    QUEUED = "queued"
    EVALUATING = "evaluating"
    COMPLETED = "completed"
    FAILED = "failed"
    INVALID = "invalid"
    CANCELLED = "cancelled"


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"  # by the participant or an admin; a worker holding it stops


class TokenPurpose(enum.StrEnum):
    VERIFY = "verify"
    RESET = "reset"


class EvaluatorKind(enum.StrEnum):
    SCORES = "scores"
    COMMAND = "command"


class EvaluatorRunner(enum.StrEnum):
    """Where a command evaluator runs."""

    LOCAL = "local"  # a subprocess of the worker (evaluation/evaluators.py)
    SLURM = "slurm"  # a Slurm batch job the worker submits and follows (evaluation/slurm.py)


class User(Base):
    """An account. `username_key`/`email_key` hold `name_key()` of the names, kept in step by
    the ORM: their unique indexes make names that differ only in case (any script) one name."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    # Wider than the names: migration 0002 may append ` #<id>` to keys of old duplicates.
    username_key: Mapped[str] = mapped_column(String(64), index=True, unique=True)
    email_key: Mapped[str] = mapped_column(String(320), index=True, unique=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    affiliation: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    @validates("username", "email")
    def _keep_key(self, name: str, value: str) -> str:
        setattr(self, f"{name}_key", name_key(value))
        return value


class AuthSession(Base):
    """A login: the JWT's `jti`; revoking the row ends the token at once."""

    __tablename__ = "auth_sessions"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
    client_address: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship()


class OneTimeToken(Base):
    """E-mail verification and password reset tokens, stored as SHA-256 of the token."""

    __tablename__ = "one_time_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class LoginFailure(Base):
    """One failed login, keyed by `account:<id>` or `address:<ip>` (shared by all workers)."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(300))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_login_failures_key_at", "key", "at"),)


class Evaluator(Base):
    __tablename__ = "evaluators"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    command: Mapped[str | None] = mapped_column(Text)
    timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    runner: Mapped[str] = mapped_column(
        String(16), default=EvaluatorRunner.LOCAL, server_default=EvaluatorRunner.LOCAL.value
    )
    # Extra options of the evaluator's Slurm jobs (partition, memory, GPUs, account).
    sbatch_args: Mapped[str] = mapped_column(Text, default="", server_default="")


class Benchmark(Base):
    __tablename__ = "benchmarks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(500), default="")
    start_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date | None] = mapped_column(Date)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    auto_eval: Mapped[bool] = mapped_column(Boolean, default=True)
    evaluator_id: Mapped[int | None] = mapped_column(
        ForeignKey("evaluators.id", ondelete="SET NULL")
    )
    quota_count: Mapped[int | None] = mapped_column(Integer)
    quota_period_seconds: Mapped[int | None] = mapped_column(Integer)
    max_archive_bytes: Mapped[int | None] = mapped_column(BigInteger)
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    evaluator: Mapped[Evaluator | None] = relationship()


class Model(Base):
    """A participant's ML model."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    gpu_budget: Mapped[str] = mapped_column(String(200), default="")
    train_set: Mapped[str] = mapped_column(Text, default="")
    authors: Mapped[str] = mapped_column(Text, default="")
    institution: Mapped[str] = mapped_column(Text, default="")
    team: Mapped[str] = mapped_column(Text, default="")
    paper_url: Mapped[str | None] = mapped_column(String(2000))
    code_url: Mapped[str | None] = mapped_column(String(2000))
    author_label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime | None]
    registered_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship()


class Submission(Base):
    __tablename__ = "submissions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    benchmark_id: Mapped[str] = mapped_column(
        ForeignKey("benchmarks.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    archive_hash: Mapped[str] = mapped_column(String(32))
    archive_size: Mapped[int | None] = mapped_column(BigInteger)
    multipart: Mapped[bool] = mapped_column(Boolean, default=False)
    has_scores: Mapped[bool] = mapped_column(Boolean, default=False)
    leaderboard_path: Mapped[str] = mapped_column(String(500), default="")
    author_label: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship()
    model: Mapped[Model] = relationship()
    benchmark: Mapped[Benchmark] = relationship()
    parts: Mapped[list[SubmissionPart]] = relationship(
        order_by="SubmissionPart.position", cascade="all, delete-orphan"
    )


class SubmissionPart(Base):
    """One index entry of an upload (a single-part upload has one, with unknown size)."""

    __tablename__ = "submission_parts"

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(BigInteger)
    md5: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[dt.datetime | None]

    __table_args__ = (UniqueConstraint("submission_id", "position"),)


class SubmissionEvent(Base):
    """One line of a submission's log: a status change or a message, with its time."""

    __tablename__ = "submission_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    status: Mapped[str | None] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")


class Job(Base):
    """An evaluation job, claimed by a worker with a lease."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[str] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Every claim, never decremented (a release gives back an attempt, not a claim): the claim
    # number names the attempt's own folder, so two attempts never share a file.
    claims: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    exit_code: Mapped[int | None] = mapped_column(Integer)
    duration_seconds: Mapped[float | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # The Slurm batch job of this evaluation (slurm runner): its id once sbatch answered, and
    # the claim whose attempt folder it reads and writes (a worker that adopts it after another
    # died follows it there). `slurm_active` is set before sbatch runs and cleared only once the
    # Slurm job was seen to end or was cancelled, so a Slurm job is never forgotten.
    slurm_job_id: Mapped[str | None] = mapped_column(String(32))
    slurm_claim: Mapped[int | None] = mapped_column(Integer)
    slurm_active: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), index=True
    )


class WorkerHeartbeat(Base):
    """An evaluation worker process, as it last reported itself: "is any worker alive?" is a
    query on `last_seen_at` (written with the worker's clock, as job leases are: the hosts of
    one installation keep their clocks in sync)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # the worker's lease owner id
    node: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime]
    last_seen_at: Mapped[dt.datetime] = mapped_column(index=True)
    current_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )


class Alert(Base):
    """One problem the operators were told about (evaluation/watchdog.py, alerts.py): a stuck
    state, open until it clears (`resolved_at`), or a one-off event such as a platform failure
    (stored resolved). The key is stable, so each problem is sent once, not once per check."""

    __tablename__ = "alerts"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    command: Mapped[str] = mapped_column(Text, default="")
    first_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(index=True)


class WatchdogTurn(Base):
    """The watchdog's election: the process whose conditional update moves `ran_at` past one
    interval runs the check for that period (one row per check, by name)."""

    __tablename__ = "watchdog_turns"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    ran_at: Mapped[dt.datetime]
    ran_by: Mapped[str] = mapped_column(String(200))


class ClusterSetting(Base):
    """One value every host reads from the database (cluster.py): the shared data folder's id,
    the cluster-wide read-only switch."""

    __tablename__ = "cluster_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Leaderboard(Base):
    __tablename__ = "leaderboards"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(100), unique=True)
    benchmark_id: Mapped[str] = mapped_column(
        ForeignKey("benchmarks.id", ondelete="CASCADE"), index=True
    )
    entry_path: Mapped[str] = mapped_column(String(500), default="scores/leaderboard.json")
    sort_key: Mapped[str] = mapped_column(String(300))
    descending: Mapped[bool] = mapped_column(Boolean, default=True)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    # The score columns of the web page: [{"key", "label", "format"}]; None shows every numeric
    # score of the entries (see leaderboards/definition.py).
    columns: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    benchmark: Mapped[Benchmark] = relationship()


class LeaderboardEntry(Base):
    """One published entry (a completed submission's JSON, or an imported historic one)."""

    __tablename__ = "leaderboard_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    leaderboard_id: Mapped[int] = mapped_column(
        ForeignKey("leaderboards.id", ondelete="CASCADE"), index=True
    )
    submission_id: Mapped[str | None] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    data: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
