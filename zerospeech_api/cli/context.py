"""What every command shares: settings loaded once from --env-file, and the database.

Both are imported when first used: every command imports this module, and not all of them need
pydantic-settings or SQLAlchemy (`version`, `cleanup-extractions`, `--help`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from zerospeech_api.db.engine import Database
    from zerospeech_api.settings import Settings


@dataclass
class CliContext:
    env_file: str | None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from zerospeech_api.settings import SettingsError, load_settings

            try:
                self._settings = load_settings(self.env_file)
            except SettingsError as exc:
                raise click.ClickException(str(exc)) from None
        return self._settings

    @cached_property
    def db(self) -> Database:
        """The configured database, migrated to the newest schema (one line and exit 1 when a
        newer build already migrated it past what this one knows)."""
        from zerospeech_api.db.engine import Database
        from zerospeech_api.db.migrate import SchemaTooNew, upgrade

        db = Database(self.settings.database)
        try:
            upgrade(db.engine)
        except SchemaTooNew as exc:
            db.dispose()
            raise click.ClickException(str(exc)) from None
        return db

    def prepare_to_run(self) -> None:
        """What `serve`, `worker`, `dev` and `supervise` do before starting anything: fail early
        on bad settings, create the data folder, migrate (once, before forking) and check that the
        data folder is writable and the one the database belongs to."""
        from zerospeech_api.cluster import SharedFolderError, check_shared_folder

        settings = self.settings
        try:
            settings.require_secret()
        except Exception as exc:
            raise click.ClickException(str(exc)) from None
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = self.db  # touching db applies the migrations
        try:
            check_shared_folder(settings=settings, db=db)
        except SharedFolderError as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            db.dispose()

    def close(self) -> None:
        """Release the database pool if a command opened it (the root group calls this)."""
        if "db" in vars(self):
            self.db.dispose()


pass_ctx = click.make_pass_decorator(CliContext)
