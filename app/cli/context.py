"""What every command shares: settings read lazily, the database, one way to fail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from app.config import Config, ConfigError, load_config

T = TypeVar("T")


class AppContext:
    """What commands share: settings (lazily) and the console."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        self.overrides = overrides
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.overrides)
            except ConfigError as exc:
                raise click.ClickException(f"configuration: {exc}") from None
        return self._config

    def database(self) -> Any:
        from app.storage.db import Database, normalize_url

        cfg = self.config
        return Database(
            normalize_url(cfg.database_url, cfg.instance),
            sqlite_synchronous=cfg.sqlite_synchronous,
        )

    def read(self, query: Callable[[Any], T]) -> T:
        """Run ``query(connection)`` on the configured database, failing with one line
        (no traceback) when the database cannot be read."""
        db = self.database()
        try:
            with db.connect() as conn:
                return query(conn)
        except Exception as exc:
            fail(f"cannot read the database: {exc.__class__.__name__}")
            raise AssertionError("unreachable") from None
        finally:
            db.dispose()

    def state(self) -> Any:
        """An :class:`app.state.AppState` with extensions installed, for commands that ingest."""
        from app.services import build_state

        try:
            state = build_state(self.config)
        except ConfigError as exc:
            raise click.ClickException(f"configuration: {exc}") from None
        return state


pass_ctx = click.make_pass_decorator(AppContext)


def fail(message: str) -> None:
    """Stop with a one-line error and exit status 1 (no traceback)."""
    raise click.ClickException(message)
