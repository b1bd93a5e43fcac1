"""Settings: defaults, .env and ZR_ variables, errors that name the variable, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from zerospeech_api.settings import (
    MIN_SECRET_LENGTH,
    Settings,
    SettingsError,
    env_file_path,
    load_settings,
)

SECRET = "s" * MIN_SECRET_LENGTH


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ZR_"):
            monkeypatch.delenv(name)


def test_laptop_defaults_put_sqlite_in_the_data_folder(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "missing.env")
    assert settings.data_dir == Path("data")
    assert settings.database.startswith("sqlite:///")
    assert settings.database.endswith("/data/zerospeech.db")
    assert settings.token_lifetime_days >= 5  # the zrc client assumes 5 days without expiry


def test_env_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "site.env"
    env.write_text(f"ZR_SECRET_KEY={SECRET}\nZR_WORKERS=3\nZR_BIND=127.0.0.1:9000\n")
    monkeypatch.setenv("ZR_WORKERS", "5")
    settings = load_settings(env)
    assert settings.require_secret() == SECRET
    assert settings.workers == 5  # the environment wins over the file
    assert settings.bind == "127.0.0.1:9000"


def test_env_file_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_file_path() == Path(".env")
    monkeypatch.setenv("ZR_ENV_FILE", str(tmp_path / "a.env"))
    assert env_file_path() == tmp_path / "a.env"
    assert env_file_path(tmp_path / "b.env") == tmp_path / "b.env"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ZR_WORKERS", "many"),
        ("ZR_WORKERS", "0"),
        ("ZR_SMTP_TLS", "sometimes"),
        ("ZR_DATABASE_URL", "mysql://x"),
        ("ZR_SECRET_KEY", "change-me"),
        ("ZR_SECRET_KEY", "short"),
        ("ZR_TOKEN_LIFETIME_DAYS", "1"),
    ],
)
def test_bad_setting_names_the_variable(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings("/nonexistent.env")
    assert variable in str(error.value)


def test_missing_secret_says_to_run_init() -> None:
    with pytest.raises(SettingsError, match="init"):
        Settings(_env_file=None).require_secret()  # type: ignore[call-arg]


def test_public_items_mask_secrets_and_database_password() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        secret_key=SECRET,
        smtp_password="hunter2-hunter2",
        database_url="postgresql+psycopg://zr:topsecret@db.internal/zr",
    )
    shown = settings.public_items()
    text = repr(shown) + repr(settings)
    assert SECRET not in text
    assert "hunter2" not in text
    assert "topsecret" not in text
    assert shown["secret_key"] == "********"
    assert shown["database_url"].startswith("postgresql+psycopg://zr:")


def test_settings_are_frozen() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen models
        settings.workers = 9  # type: ignore[misc]


def test_a_pool_smaller_than_the_thread_pool_is_refused_naming_the_variables() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(Path("/nonexistent/.env"), threads=32, db_pool_size=16, db_max_overflow=4)
    message = str(error.value)
    assert (
        "ZR_DB_POOL_SIZE (16) + ZR_DB_MAX_OVERFLOW (4)" in message and "ZR_THREADS (32)" in message
    )
    assert load_settings(Path("/nonexistent/.env"), threads=20).threads == 20
