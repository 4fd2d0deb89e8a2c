"""Backup and restore of the SQLite database; for PostgreSQL, the pg_dump/pg_restore commands."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import click

from app.cli.context import AppContext, fail, pass_ctx, redact
from app.cli.output import Output, Progress, listing_options, print_json

# The default of --pages-per-step (app.storage.backup.PAGES_PER_STEP, kept in step).
PAGES_PER_STEP = 256

# Exit status when the command does not apply to the configured database (PostgreSQL).
NOT_SQLITE = 2


def register(group: click.Group) -> None:
    """Add ``backup`` and ``restore`` to ``group``."""
    group.add_command(backup_cmd)
    group.add_command(restore_cmd)


def _sqlite_file_or_explain(app_ctx: AppContext, path: Path, *, restore: bool) -> Path:
    """The configured SQLite file; for PostgreSQL, print the pg_dump / pg_restore
    commands and exit with status 2."""
    from app.storage.backup import pg_commands, sqlite_file

    url = app_ctx.database_url()
    database = sqlite_file(url)
    if database is not None:
        return database
    if not url.startswith("postgresql"):
        fail(f"{redact(url)}: backup and restore handle SQLite files and PostgreSQL only")
    tool = "pg_restore" if restore else "pg_dump"
    click.echo(
        f"ninjahook {'restore' if restore else 'backup'} copies SQLite databases; "
        f"{redact(url)} is PostgreSQL: use {tool}"
        + (" with the server stopped, then migrate" if restore else "")
        + " (the password is left out: set PGPASSWORD or use ~/.pgpass):",
        err=True,
    )
    for line in pg_commands(url, str(path), restore=restore):
        click.echo(f"  {line}")
    sys.exit(NOT_SQLITE)


@click.command("backup")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
@click.option(
    "--pages-per-step",
    default=PAGES_PER_STEP,
    show_default=True,
    type=click.IntRange(1),
    help="Database pages copied per step of SQLite's online backup.",
)
@listing_options(jsonl=False)
@pass_ctx
def backup_cmd(
    app_ctx: AppContext, path: Path, force: bool, pages_per_step: int, output: Output
) -> None:
    """Copy the SQLite database to PATH, consistently, while the server runs.

    The copy is the database as it was when the backup started, checked with
    PRAGMA integrity_check; its rows per table are listed (--json: one object with
    the path, size, seconds and rows per table). For PostgreSQL this prints the
    pg_dump command instead (exit status 2).
    """
    from app.storage.backup import BackupError, Copy, backup

    database = _sqlite_file_or_explain(app_ctx, path, restore=False)
    copy: Copy | None = None
    try:
        with Progress(unit="pages") as report:

            def advance(done: int, total: int) -> None:
                report(f"backing up to {path}", done, total)

            copy = backup(
                database, path, force=force, pages_per_step=pages_per_step, progress=advance
            )
    except BackupError as exc:
        fail(f"backup: {exc}")
    except OSError as exc:
        fail(f"backup: cannot write {path}: {exc.strerror or exc}")
    assert copy is not None
    if output == "json":
        print_json(
            {
                "database": str(database),
                "path": str(copy.path),
                "bytes": copy.size,
                "integrity": "ok",
                "seconds": round(copy.seconds, 3),
                "rows": copy.rows,
            }
        )
        return
    _print_rows(copy.rows)
    click.echo(
        f"backed up {database} to {copy.path}: {copy.size} bytes, integrity ok, "
        f"{copy.rows.get('activities', 0)} activities, {copy.seconds:.1f} s"
    )


@click.command("restore")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@pass_ctx
def restore_cmd(app_ctx: AppContext, path: Path) -> None:
    """Replace the SQLite database with the backup PATH, then migrate it.

    Refuses while a server (or any other process) has the database open. The
    replaced database is kept beside it as <name>.<UTC time>.bak. For PostgreSQL
    this prints the pg_restore commands instead (exit status 2).
    """
    from app.storage.backup import BackupError, restore

    database = _sqlite_file_or_explain(app_ctx, path, restore=True)
    running = running_server(app_ctx.config.instance, database)
    if running:
        fail(f"restore: {running}; stop it first (e.g. systemctl stop ninjahook)")
    try:
        copy, bak = restore(path, database)
    except BackupError as exc:
        fail(f"restore: {exc}")
    except OSError as exc:
        fail(f"restore: {exc.strerror or exc}: {exc.filename or database}")
    if bak is not None:
        click.echo(f"kept the replaced database as {bak}")
    _print_rows(copy.rows)
    click.echo(f"restored {path} to {database}")
    from app.cli.server import run_migrations

    run_migrations(app_ctx)


def running_server(instance: Path, database: Path) -> str | None:
    """Why ``database`` must not be replaced now, or None.

    Two checks, each reliable on its own ground:

    * gunicorn's control socket ``gunicorn.ctl`` in the instance folder accepts a
      connection: a ninjahook gunicorn runs on this instance, even before it has opened
      the database (a socket file left by a killed server refuses connections);
    * another process has the database open (:func:`app.storage.backup.in_use`, the
      lock SQLite itself holds in ``<database>-shm``): ``ninjahook serve``, a worker,
      any command in progress.
    """
    from app.storage.backup import in_use

    control = instance / "gunicorn.ctl"
    if control.exists():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            try:
                sock.connect(str(control))
                return f"a ninjahook server is running (it answers on {control})"
            except OSError:
                pass
    if in_use(database):
        return f"another process has {database} open (a running server?)"
    return None


def _print_rows(rows: dict[str, int]) -> None:
    width = max((len(t) for t in rows), default=0)
    for table, count in rows.items():
        click.echo(f"  {table:<{width}}  {count:>10}")
