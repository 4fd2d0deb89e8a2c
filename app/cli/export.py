"""``ninjahook export``: stored activities as JSON Lines or CSV, to a file or stdout."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import click

from app.cli.context import AppContext, database_errors, fail, pass_ctx, silence_stdout
from app.cli.output import Progress
from app.timeparse import parse_instant


def register(group: click.Group) -> None:
    """Add ``export`` to ``group``."""
    group.add_command(export)


def _time_option(_ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Epoch seconds from ISO 8601, epoch seconds, or an age such as 30m, 6h, 2d."""
    if value is None or value == "":
        return None
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="jsonl: the original payloads, one a line; csv: the stored columns with a header.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write to PATH (through a temporary file, renamed when complete). [default: stdout]",
)
@click.option(
    "--since",
    callback=_time_option,
    help="Activities at or after this time: ISO 8601, epoch seconds or an age (30m, 6h, 2d).",
)
@click.option("--until", callback=_time_option, help="Activities before this time (same forms).")
@click.option("--organization", type=int, default=None, help="Only this organizationId.")
@click.option("--device", type=int, default=None, help="Only this deviceId.")
@click.option("--location", type=int, default=None, help="Only this locationId.")
@click.option("--type", "activity_type", default=None, help="Only this activityType.")
@click.option("--status", default=None, help="Only this statusCode.")
@click.option("--severity", default=None, help="Only this severity.")
@click.option("--source-name", default=None, help="Only this sourceName.")
@click.option("--q", "text", default=None, help="Text in the message or subject (any case).")
@pass_ctx
def export(
    app_ctx: AppContext,
    fmt: str,
    output: Path | None,
    since: float | None,
    until: float | None,
    organization: int | None,
    device: int | None,
    location: int | None,
    activity_type: str | None,
    status: str | None,
    severity: str | None,
    source_name: str | None,
    text: str | None,
) -> None:
    """Stream stored activities, oldest id first, as JSON Lines or CSV.

    JSON Lines carries each original payload byte for byte, one a line (a CR or LF
    in a body, JSON whitespace, is written as a space). CSV carries the stored
    columns under the read API's names. Memory stays flat however many rows match:
    rows are read in id-keyed batches. On a terminal, progress shows on stderr;
    otherwise only a summary line goes to stderr when done.
    """
    from app.activities.export import export_chunks
    from app.storage.activities import ActivityFilter

    flt = ActivityFilter(
        device_id=device,
        organization_id=organization,
        location_id=location,
        activity_type=activity_type,
        status_code=status,
        severity=severity,
        source_name=source_name,
        text=text or None,
        since=since,
        until=until,
    )
    app_ctx.read(lambda _conn: None)  # a missing SQLite file fails here, with one line
    started = time.monotonic()
    rows = 0
    size = 0
    with database_errors(app_ctx.database_url(), "read"):
        db = app_ctx.database()
        try:
            with (
                _Destination(output) as sink,
                Progress(unit="activities") as report,
            ):
                for chunk, count in export_chunks(db, flt, fmt):
                    _write(sink, chunk, output)
                    rows += count
                    size += len(chunk)
                    report("exporting", rows)
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, as other tools do.
            silence_stdout()
            return
        finally:
            db.dispose()
    where = str(output) if output is not None else "stdout"
    click.echo(
        f"exported {rows} activities ({size} bytes, {fmt}) to {where} "
        f"in {time.monotonic() - started:.1f} s",
        err=True,
    )


def _write(sink: IO[bytes], chunk: bytes, output: Path | None) -> None:
    """Write to the destination; a failure there (a full disk) is named as such, not
    taken for a database error."""
    try:
        sink.write(chunk)
    except BrokenPipeError:
        raise
    except OSError as exc:
        fail(f"cannot write {output or 'stdout'}: {exc.strerror or exc}")


class _Destination:
    """Where the export goes: stdout, or a temporary file renamed over ``path`` on success."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.temp: Path | None = None
        self.file: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        if self.path is None:
            return sys.stdout.buffer
        directory = self.path.parent if str(self.path.parent) else Path(".")
        try:
            fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=directory)
        except OSError as exc:
            fail(f"cannot write {self.path}: {exc.strerror or exc}")
        self.temp = Path(name)
        self.file = os.fdopen(fd, "wb")
        return self.file

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.path is None:
            if exc_type is None:
                try:
                    sys.stdout.buffer.flush()
                except BrokenPipeError:
                    raise
                except OSError as err:
                    fail(f"cannot write stdout: {err.strerror or err}")
            return
        assert self.file is not None and self.temp is not None
        try:
            if exc_type is None:
                self.file.flush()
                os.fsync(self.file.fileno())
            self.file.close()
            if exc_type is None:
                os.replace(self.temp, self.path)
                self.temp = None
        except OSError as err:
            fail(f"cannot write {self.path}: {err.strerror or err}")
        finally:
            if self.temp is not None:
                self.temp.unlink(missing_ok=True)
