"""What every command shares: settings read lazily, the database, one way to fail."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
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

    def startup_config(self, *, routes: bool = True) -> Config:
        """The settings plus what a server checks before it starts (the instance folder
        is writable and, with ``routes``, the routes file is valid), or fail with one line."""
        from app.config import check_instance_folder
        from app.services import check_startup

        config = self.config
        try:
            check_startup(config) if routes else check_instance_folder(config)
        except ConfigError as exc:
            raise click.ClickException(f"configuration: {exc}") from None
        return config

    def database(self) -> Any:
        from app.storage.db import Database, normalize_url

        cfg = self.config
        return Database(
            normalize_url(cfg.database_url, cfg.instance),
            sqlite_synchronous=cfg.sqlite_synchronous,
        )

    def database_url(self) -> str:
        """The configured database's URL, normalized (SQLite in the instance folder when
        none is set)."""
        from app.storage.db import normalize_url

        return normalize_url(self.config.database_url, self.config.instance)

    def read(self, query: Callable[[Any], T]) -> T:
        """Run ``query(connection)`` on the configured database, failing with one line
        (see :func:`database_errors`) when the database cannot be read.

        A SQLite file that does not exist is not created: the command fails instead."""
        import sqlalchemy as sa

        url = self.database_url()
        parsed = sa.engine.make_url(url)
        local = parsed.get_backend_name() == "sqlite" and parsed.database not in (
            None,
            "",
            ":memory:",
        )
        if local and not Path(str(parsed.database)).is_file():
            fail(f"cannot read {redact(url)}: no such file (run `ninjahook migrate` to create it)")
        with database_errors(url, "read"):
            db = self.database()
            try:
                with db.connect() as conn:
                    return query(conn)
            finally:
                db.dispose()
        raise AssertionError("unreachable")

    def state(self) -> Any:
        """An :class:`app.state.AppState` with extensions installed, for commands that ingest."""
        from app.services import build_state

        try:
            # A command ends when its work does: misses are not fetched from here (the
            # server's cache maintenance and its periodic sync catch up).
            state = build_state(self.config, refresh_cache=False)
        except ConfigError as exc:
            raise click.ClickException(f"configuration: {exc}") from None
        return state


pass_ctx = click.make_pass_decorator(AppContext)


def fail(message: str) -> None:
    """Stop with a one-line error and exit status 1 (no traceback)."""
    raise click.ClickException(message)


def redact(url: str) -> str:
    """``url`` with its password hidden."""
    from app.storage.db import redact_url

    return redact_url(url)


def describe_database_error(url: str, exc: BaseException) -> str:
    """One line naming the database (password hidden) and the cause of ``exc``."""
    return f"{redact(url)}: {_cause(exc)}"


def _cause(exc: BaseException) -> str:
    """The class and first line of the driver's error behind ``exc`` (or of ``exc``)."""
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0][:200]
    return f"{cause.__class__.__name__}{': ' + first if first else ''}"


@contextmanager
def database_errors(url: str, action: str) -> Iterator[None]:
    """The one way a command fails on the database: an error from the database inside
    the block (SQLAlchemy's errors, which wrap the driver's; an OSError such as an
    unwritable SQLite folder; a migration error) ends the command with one line,
    ``cannot <action> <url>: <cause>``, and exit status 1.

    Anything else, a programming error above all, is not a database failure: it
    propagates with its traceback.
    """
    import sqlalchemy as sa
    from alembic.util import CommandError

    try:
        yield
    except (sa.exc.SQLAlchemyError, CommandError, OSError) as exc:
        fail(f"cannot {action} {describe_database_error(url, exc)}")


# The exit statuses every command keeps to (``ninjahook --help`` and README list them).
EXIT_OK = 0
EXIT_FAILURE = 1  # click.ClickException, and fail()
EXIT_USAGE = 2  # click.UsageError: an unknown option, a bad value


class CommandGroup(click.Group):
    """The top-level group: whatever a command lets escape from the database or from
    NinjaOne still ends in one line and exit status 1, and a reader that goes away
    (``| head``) ends the command quietly. A programming error keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            silence_stdout()
            raise SystemExit(EXIT_OK) from None
        except Exception as exc:
            message = _external_failure(ctx, exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


def _external_failure(ctx: click.Context, exc: Exception) -> str | None:
    """One line for a failure of the database or of NinjaOne, None for anything else."""
    import sqlalchemy as sa
    from alembic.util import CommandError

    from app.ninjaone.client import NinjaOneError

    if isinstance(exc, NinjaOneError):
        return str(exc)
    if isinstance(exc, (sa.exc.SQLAlchemyError, CommandError)):
        app_ctx = ctx.find_object(AppContext)
        try:
            url = app_ctx.database_url() if app_ctx is not None else None
        except click.ClickException:
            url = None
        if url is None:
            return f"database: {_cause(exc)}"
        return f"database {describe_database_error(url, exc)}"
    return None


def silence_stdout() -> None:
    # Python flushes stdout at exit; with the reader gone that flush raises again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (an in-process test runner)
        pass
