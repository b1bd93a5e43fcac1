"""What every command shares: settings loaded once from --env-file, and the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import click

from zerospeech_api.db.engine import Database
from zerospeech_api.settings import Settings, SettingsError, load_settings


@dataclass
class CliContext:
    env_file: str | None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.env_file)
            except SettingsError as exc:
                raise click.ClickException(str(exc)) from None
        return self._settings

    @cached_property
    def db(self) -> Database:
        """The configured database, migrated to the newest schema."""
        from zerospeech_api.db.migrate import upgrade

        db = Database(self.settings.database)
        upgrade(db.engine)
        return db

    def close(self) -> None:
        """Release the database pool if a command opened it (the root group calls this)."""
        if "db" in vars(self):
            self.db.dispose()


pass_ctx = click.make_pass_decorator(CliContext)
