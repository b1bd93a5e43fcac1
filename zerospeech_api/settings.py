"""One typed, frozen settings object read from `ZR_*` variables and a `.env` file."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ZR_"
PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "secret", "CHANGE_ME"}
MIN_SECRET_LENGTH = 32
MIN_METRICS_TOKEN_LENGTH = 16


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the `ZR_` variable."""


class Settings(BaseSettings):
    """Every knob of the appliance; each field has a laptop-safe default except the secret."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    # --- where things live ---------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="Data folder: database, uploads, logs.")
    database_url: str = Field(
        "",
        repr=False,  # may hold a password
        description="SQLAlchemy URL; empty means SQLite at <data_dir>/zerospeech.db. "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db",
    )
    secret_key: SecretStr = Field(
        SecretStr(""), description="Signs session tokens. `init` generates one into .env."
    )
    base_url: str = Field(
        "http://127.0.0.1:8000", description="Public URL, used in e-mailed links."
    )
    app_name: str = Field("zerospeech-api", description="Name shown by GET / and in mails.")
    contact_email: str = Field(
        "contact@zerospeech.com", description="Contact address shown by GET / and in mails."
    )
    read_only: bool = Field(
        False, description="Every write answers 423 (for upgrades and backups)."
    )
    node_name: str = Field(
        "",
        max_length=64,
        description="This host's name among the hosts sharing the data folder; its temp and "
        "scratch files live in <data_dir>/nodes/<node_name>. Empty: the host name.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the API and the worker."
    )

    # --- gunicorn (serve) ----------------------------------------------------------------
    bind: str = Field("127.0.0.1:8000", description="gunicorn bind: host:port or unix:/path.")
    workers: int = Field(4, ge=1, le=64, description="gunicorn worker processes.")
    timeout: int = Field(
        900, ge=10, description="gunicorn worker timeout in seconds (large uploads)."
    )
    graceful_timeout: int = Field(
        60, ge=1, description="Seconds a worker may finish in-flight requests on reload/stop."
    )
    keepalive: int = Field(5, ge=0, description="Seconds to keep idle connections open.")
    forwarded_allow_ips: str = Field(
        "127.0.0.1", description="Proxies whose X-Forwarded-* headers are trusted (nginx)."
    )
    metrics_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token that lets a scraper read /metrics from elsewhere than "
        "loopback; empty: loopback clients only.",
    )

    # --- concurrency per server process (README: "Concurrency and overload") -------------
    threads: int = Field(
        16,
        ge=1,
        le=256,
        description="Threads per server process for request work (database, files); a "
        "database connection is only held by one of them.",
    )
    db_pool_size: int = Field(
        16, ge=1, description="Database connections kept open per server process."
    )
    db_max_overflow: int = Field(
        4,
        ge=0,
        description="Connections a server process may open past db_pool_size (background "
        "joins and recovery); pool size + overflow must be at least threads.",
    )
    db_wait_seconds: float = Field(
        5,
        gt=0,
        description="How long a request waits for a pooled connection or SQLite's write lock "
        "before it is answered 503 with Retry-After.",
    )
    max_in_flight: int = Field(
        64, ge=1, description="Requests a server process works on at once; more wait in a queue."
    )
    max_in_flight_per_client: int = Field(
        8,
        ge=1,
        description="Requests in flight per server process from one bearer token (or one "
        "client address without a token), so one client cannot take every thread.",
    )
    queue_seconds: float = Field(
        5,
        ge=0,
        description="How long a request over those limits waits for its turn before it is "
        "answered 503 with Retry-After.",
    )

    # --- accounts ------------------------------------------------------------------------
    token_lifetime_days: int = Field(
        7, ge=5, le=90, description="Session token lifetime (the zrc client assumes >= 5 days)."
    )
    verify_token_hours: int = Field(48, ge=1, description="E-mail verification link lifetime.")
    reset_token_minutes: int = Field(
        30, ge=5, le=59, description="Password reset link lifetime (under an hour)."
    )
    argon2_time_cost: int = Field(2, ge=1, description="argon2id iterations.")
    argon2_memory_kib: int = Field(19456, ge=8192, description="argon2id memory in KiB.")
    argon2_parallelism: int = Field(1, ge=1, description="argon2id lanes.")
    login_max_failures_account: int = Field(
        5,
        ge=1,
        description="Failed logins per account from one client address within the window; "
        "past it, that address gets 429 for that account.",
    )
    login_max_failures_address: int = Field(
        20,
        ge=1,
        description="Failed logins per client address within the window before 429; not "
        "counted against accounts that logged in from that address before.",
    )
    login_max_failures_account_global: int = Field(
        50,
        ge=1,
        description="Failed logins per account from all addresses within the window; past it, "
        "addresses it never logged in from get 429 for it (the others are not affected).",
    )
    login_window_seconds: int = Field(300, ge=1, description="Login rate-limit window.")
    signup_max_per_address: int = Field(
        10, ge=1, description="Sign-ups per client address within the sign-up window."
    )
    signup_window_seconds: int = Field(3600, ge=1, description="Sign-up rate-limit window.")

    # --- mail ----------------------------------------------------------------------------
    smtp_host: str = Field("", description="SMTP server; empty writes .eml files to outbox/.")
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP port.")
    smtp_tls: Literal["starttls", "ssl", "none"] = Field("starttls", description="SMTP TLS.")
    smtp_user: str = Field("", description="SMTP user name.")
    smtp_password: SecretStr = Field(SecretStr(""), description="SMTP password.")
    mail_from: str = Field(
        "ZeroSpeech <noreply@zerospeech.com>", description="From: address of outgoing mail."
    )

    # --- uploads -------------------------------------------------------------------------
    max_request_bytes: int = Field(
        520_000_000, ge=1024, description="Largest upload request body (one 500 MB part)."
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body of every route but uploads."
    )
    default_max_archive_bytes: int = Field(
        50_000_000_000, ge=1024, description="Archive size limit for benchmarks without one."
    )
    upload_reserve_bytes: int = Field(
        100_000_000,
        ge=0,
        description="Free disk space kept in the data folder; a part that would leave less is "
        "refused (507) before its body is read.",
    )
    upload_idle_timeout_seconds: float = Field(
        120,
        gt=0,
        description="Seconds an upload may send no body bytes; then it is aborted (408) and "
        "its temp file removed.",
    )
    upload_recovery_seconds: float = Field(
        60,
        gt=0,
        description="Seconds between two recoveries in each server process; retries due "
        "joins, removes temp files of dead processes.",
    )

    # --- evaluation ----------------------------------------------------------------------
    worker_processes: int = Field(1, ge=0, le=32, description="Evaluation workers (supervise).")
    run_as_user: str = Field(
        "",
        max_length=64,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$|^$",
        description="User that `supervise` started as root switches to before anything else "
        "(API, workers, files); empty: no switch (a warning as root); `root`: stay root.",
    )
    worker_poll_seconds: float = Field(
        0.5, gt=0, description="How often an idle worker looks for jobs."
    )
    worker_heartbeat_seconds: float = Field(
        10,
        gt=0,
        description="How often a worker reports itself alive; one silent for three times this "
        "is counted dead.",
    )
    job_lease_seconds: int = Field(
        60, ge=5, description="A claimed job is re-queued if its lease is not renewed in time."
    )
    job_max_attempts: int = Field(3, ge=1, description="Attempts before a job fails for good.")
    evaluator_timeout_seconds: int = Field(
        3600, ge=1, description="Default time limit of a command evaluator."
    )
    max_unpacked_bytes: int = Field(
        20_000_000_000,
        ge=1024,
        description="Cap on an archive's unpacked size (an archive over it is invalid).",
    )
    unpack_reserve_bytes: int = Field(
        1_000_000_000,
        ge=0,
        description="Free space an unpack always leaves on the data disk (else the job fails).",
    )
    max_unpacked_files: int = Field(
        200_000, ge=1, description="Cap on the number of files in an archive."
    )
    worker_stop_grace_seconds: float = Field(
        30, ge=0, description="On SIGTERM a worker may finish its job this long, else releases it."
    )
    evaluation_log_max_bytes: int = Field(
        10_000_000, ge=4096, description="Evaluation log kept per submission (head and tail)."
    )
    slurm_max_in_flight: int = Field(
        16,
        ge=1,
        description="Slurm jobs one worker keeps submitted and follows at once (slurm runner); "
        "while that many run, it claims no new job.",
    )
    slurm_poll_seconds: float = Field(
        5,
        gt=0,
        description="How often a worker asks Slurm (squeue) about the jobs it follows.",
    )

    # --- queue health and alerts (README: "Queue health and alerts") ----------------------
    watchdog_seconds: float = Field(
        60,
        gt=0,
        description="How often the queue health check runs (one worker at a time); it fixes "
        "what is safe to fix and alerts the operators about the rest.",
    )
    evaluation_overdue_seconds: int = Field(
        600,
        ge=0,
        description="An evaluation still running this long past its evaluator's time limit is "
        "reported stuck.",
    )
    operator_email: str = Field(
        "",
        description="Operators' e-mail address(es), comma-separated, for alerts (stuck queue, "
        "platform failures); empty sends no alert mail.",
    )
    alert_webhook_url: SecretStr = Field(
        SecretStr(""),
        description="Incoming-webhook URL (Slack, Mattermost) that gets alerts as a JSON POST "
        '{"text": ...}; it holds a secret token, so it is shown masked.',
    )

    # --- leaderboards --------------------------------------------------------------------
    leaderboard_max_age: int = Field(
        60, ge=0, description="Cache-Control max-age of leaderboard reads, in seconds."
    )
    leaderboard_recheck_seconds: float = Field(
        1.0, ge=0, description="A server process re-checks a cached leaderboard this often."
    )

    @field_validator("secret_key")
    @classmethod
    def _secret_strength(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and (raw in PLACEHOLDER_SECRETS or len(raw) < MIN_SECRET_LENGTH):
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} random characters")
        return value

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_strength(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and (raw in PLACEHOLDER_SECRETS or len(raw) < MIN_METRICS_TOKEN_LENGTH):
            raise ValueError(f"must be at least {MIN_METRICS_TOKEN_LENGTH} random characters")
        return value

    @field_validator("db_max_overflow")
    @classmethod
    def _pool_covers_threads(cls, value: int, info: ValidationInfo) -> int:
        # Every thread may hold one connection: with fewer, a thread would wait for a connection
        # held by another thread, and requests would time out under load instead of queueing.
        threads, pool = info.data.get("threads"), info.data.get("db_pool_size")
        if threads is not None and pool is not None and pool + value < threads:
            raise ValueError(
                f"{ENV_PREFIX}DB_POOL_SIZE ({pool}) + {ENV_PREFIX}DB_MAX_OVERFLOW ({value}) must "
                f"be at least {ENV_PREFIX}THREADS ({threads})"
            )
        return value

    @field_validator("operator_email")
    @classmethod
    def _operator_addresses(cls, value: str) -> str:
        for address in _addresses(value):
            local, _, domain = address.rpartition("@")
            if not local or "." not in domain or any(c.isspace() for c in address):
                raise ValueError(f"not an e-mail address: {address!r}")
        return value

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_scheme(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw and not raw.startswith(("https://", "http://")):
            # Never echo the value: it holds the webhook's secret token.
            raise ValueError("must be an https:// (or http://) URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        return value

    @property
    def database(self) -> str:
        """The effective database URL (SQLite inside the data folder by default)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir.resolve() / 'zerospeech.db'}"

    @property
    def uses_postgres(self) -> bool:
        """True when the database is PostgreSQL, which several hosts may share."""
        return self.database.startswith("postgresql")

    @property
    def node(self) -> str:
        """This host's node name: `node_name`, else the host name, made a safe folder name."""
        return safe_node_name(self.node_name or socket.gethostname())

    @property
    def node_dir(self) -> Path:
        """<data_dir>/nodes/<node>: this host's own temp and scratch files, which no other
        host's start-up or sweep ever touches."""
        return self.data_dir / "nodes" / self.node

    @property
    def operator_addresses(self) -> list[str]:
        """The operators' addresses from `operator_email` (empty: no alert mail)."""
        return _addresses(self.operator_email)

    def require_secret(self) -> str:
        """The secret key, or a `SettingsError` telling the operator to run `init`."""
        raw = self.secret_key.get_secret_value()
        if not raw:
            raise SettingsError(
                f"{ENV_PREFIX}SECRET_KEY is not set: run `zerospeech-api init` to generate one"
            )
        return raw

    def public_items(self) -> dict[str, str]:
        """Effective settings as text, secrets masked (for `check` and logs)."""
        shown: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown[name] = "********" if value.get_secret_value() else "(unset)"
            elif name == "database_url" and value:
                shown[name] = _mask_url_password(value)
            else:
                shown[name] = str(value)
        return shown


def safe_node_name(name: str) -> str:
    """`name` as one plain folder name: letters, digits, `.`, `_`, `-` kept, anything else
    `-`, at most 64 characters, never empty or only dots."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", name)[:64]
    return cleaned if cleaned.strip(".") else "node"


def _addresses(value: str) -> list[str]:
    return [address.strip() for address in value.split(",") if address.strip()]


def _mask_url_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"


def env_file_path(env_file: str | os.PathLike[str] | None = None) -> Path:
    """The .env path: the argument, else $ZR_ENV_FILE, else ./.env."""
    return Path(env_file or os.environ.get(f"{ENV_PREFIX}ENV_FILE") or ".env")


def load_settings(env_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read settings from the .env file and the environment; errors name the variable.

    `overrides` are field values of any type, validated like the environment's."""
    path = env_file_path(env_file)
    try:
        return Settings(_env_file=path if path.is_file() else None, **overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
        raise SettingsError("bad setting: " + "; ".join(problems)) from None
