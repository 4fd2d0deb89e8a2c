"""How every command prints for people and for scripts.

Listings: a table on a terminal, ``--json`` (one JSON document) or ``--jsonl`` (one JSON
object a line) for scripts (:func:`listing_options`, :func:`print_listing`). An id, a
time or a count is never cut or wrapped, on a terminal or off one; off a terminal (a pipe,
a file, a log) a table is as wide as its rows.

Progress of long commands goes to stderr (:class:`Progress`): rich's live display on a
terminal; off one, nothing (the command's result line is the only line it prints).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import click

Output = Literal["table", "json", "jsonl"]
F = TypeVar("F", bound=Callable[..., Any])

# Off a terminal a table is never cut to a width: it is as wide as its rows need.
_UNLIMITED = 1_000_000
# On a terminal, the narrowest a free-text column gets before the table outgrows the
# terminal (the terminal then wraps its lines, but no value is cut).
_TEXT_MIN = 12


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def listing_options(*, jsonl: bool = True) -> Callable[[F], F]:
    """Add ``--json`` (and, with ``jsonl``, ``--jsonl``) to a command; it receives
    ``output``: ``"table"``, ``"json"`` or ``"jsonl"``. Both at once is a usage error."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            as_json = kwargs.pop("as_json", False)
            as_jsonl = kwargs.pop("as_jsonl", False)
            if as_json and as_jsonl:
                raise click.UsageError("--json and --jsonl are exclusive: choose one")
            output: Output = "json" if as_json else "jsonl" if as_jsonl else "table"
            return command(*args, output=output, **kwargs)

        if jsonl:
            wrapper = click.option(
                "--jsonl",
                "as_jsonl",
                is_flag=True,
                help="Print one JSON object a line (JSON Lines), for scripts.",
            )(wrapper)
        wrapper = click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="Print one JSON document, for scripts.",
        )(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


@dataclass(frozen=True)
class Column:
    """A table column: ``title`` over ``key`` of each row.

    ``whole``: an id, a time, a count or a status, printed whole and on one line however
    narrow the terminal. Otherwise free text, wrapped on a terminal; ``preview`` cuts it
    to that many characters on a terminal (``…`` marks the cut), never off one.
    ``drop``: on a terminal too narrow for every column, columns with a ``drop`` rank
    are left out, rank 1 first, until the rest fits (a note on stderr names them).
    """

    title: str
    key: str
    whole: bool = False
    preview: int | None = None
    justify: Literal["left", "right"] = "left"
    drop: int | None = None


def print_listing(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    output: Output,
    *,
    empty: str,
    document: Any = None,
) -> None:
    """Print ``rows``: as JSON (``document`` when given, else the list of rows), as JSON
    Lines (each row), or as a table of ``columns`` (``empty`` when there are no rows)."""
    if output == "json":
        print_json(list(rows) if document is None else document)
    elif output == "jsonl":
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False, default=str))
    elif not rows:
        click.echo(empty)
    else:
        print_table(rows, columns)


def print_json(document: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> None:
    """A rich table on stdout: whole columns never cut; off a terminal, no width limit."""
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    terminal = stdout_is_terminal()
    cells = [[_cell(row.get(col.key)) for col in columns] for row in rows]
    if terminal:
        for line in cells:
            for i, col in enumerate(columns):
                if col.preview is not None and len(line[i]) > col.preview:
                    line[i] = line[i][: col.preview] + "…"
    widths = {
        col.key: max([cell_len(col.title)] + [cell_len(line[i]) for line in cells])
        for i, col in enumerate(columns)
    }
    shown = list(columns)
    console = Console() if terminal else Console(width=_UNLIMITED)
    if terminal:
        needed = _narrowest(shown, widths)
        droppable = sorted((c for c in shown if c.drop is not None), key=lambda c: c.drop or 0)
        while needed > console.width and droppable:
            shown.remove(droppable.pop(0))
            needed = _narrowest(shown, widths)
        if len(shown) < len(columns):
            hidden = ", ".join(c.title for c in columns if c not in shown)
            click.echo(
                f"not shown at this width: {hidden} (widen the terminal or use --json)", err=True
            )
        if needed > console.width:  # the terminal wraps the lines; no value is cut
            console = Console(width=needed)
    table = Table()
    for col in shown:
        if col.whole:
            table.add_column(
                col.title, no_wrap=True, min_width=widths[col.key], justify=col.justify
            )
        else:
            table.add_column(col.title, overflow="fold", justify=col.justify)
    for line in cells:
        # Text, not markup: a value such as "[/]" is printed as it is.
        table.add_row(
            *(Text(value) for col, value in zip(columns, line, strict=True) if col in shown)
        )
    console.print(table)


def _narrowest(columns: Sequence[Column], widths: Mapping[str, int]) -> int:
    """The narrowest a table of ``columns`` gets with every whole column whole: free text
    at ``_TEXT_MIN``, plus each column's padding and rule and the closing rule."""
    text = sum(widths[col.key] if col.whole else min(widths[col.key], _TEXT_MIN) for col in columns)
    return text + 3 * len(columns) + 1


class Progress:
    """Progress of a long command, on stderr.

    ``with Progress(unit="pages") as report: report(stage, done, total)``. On a
    terminal, rich's live display, one line per stage, gone when done. Off a terminal
    nothing at all: the command's own result line is the only one it leaves.
    """

    def __init__(self, *, unit: str = "") -> None:
        self.unit = unit
        self._live: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Callable[..., None]:
        if stderr_is_terminal():
            from rich.console import Console
            from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._live = RichProgress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[shown]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._live.start()
        return self.report

    def report(self, stage: str, done: int, total: int | None = None) -> None:
        """``done`` (of ``total``, when known) so far at ``stage``."""
        if self._live is None:
            return
        unit = f" {self.unit}" if self.unit else ""
        shown = f"{done:,}/{total:,}{unit}" if total is not None else f"{done:,}{unit}"
        if stage not in self._tasks:
            self._tasks[stage] = self._live.add_task(stage, total=total, shown=shown)
        self._live.update(self._tasks[stage], completed=done, total=total, shown=shown)

    def __exit__(self, *_exc: Any) -> None:
        if self._live is not None:
            self._live.stop()
