"""The figures every soak scenario reports, printed at the end and written to RELIABILITY.md."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT

REPORT_PATH = ROOT / "RELIABILITY.md"


@dataclass(frozen=True)
class Figures:
    """One scenario on one backend: what was sent, acknowledged, stored and lost."""

    scenario: str
    backend: str
    sent: int
    acknowledged: int
    stored: int
    lost: int
    notes: str = ""


class FigureBook:
    """Collects :class:`Figures` during the session."""

    def __init__(self) -> None:
        self.rows: list[Figures] = []
        self.started = time.monotonic()

    def record(self, figures: Figures) -> None:
        self.rows.append(figures)

    def table(self) -> list[str]:
        lines = [
            "| scenario | backend | sent | acknowledged | stored | lost | notes |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for f in self.rows:
            lines.append(
                f"| {f.scenario} | {f.backend} | {f.sent} | {f.acknowledged} | {f.stored} "
                f"| {f.lost} | {f.notes} |"
            )
        return lines

    def write(self, path: Path) -> None:
        backends = sorted({f.backend for f in self.rows})
        elapsed = time.monotonic() - self.started
        text = [
            "# Reliability figures",
            "",
            "Written by `make soak` (the tests marked `slow` in tests/reliability/). "
            "Each scenario runs against real gunicorn servers on 127.0.0.1. *sent* counts "
            "requests the sender started, *acknowledged* the ids answered with a 2xx, "
            "*stored* the activities in the database afterwards and *lost* the acknowledged "
            "ids missing from it, which must be 0.",
            "",
            f"Last run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, backends: "
            f"{', '.join(backends)}, {elapsed:.0f} s for the soak tests.",
            "",
            *self.table(),
            "",
        ]
        path.write_text("\n".join(text))


_BOOK = FigureBook()


@pytest.fixture
def figures() -> Iterator[FigureBook]:
    """Where a soak scenario records its figures."""
    yield _BOOK


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Only a run that measured something rewrites the report.
    if _BOOK.rows and not hasattr(session.config, "workerinput"):
        _BOOK.write(REPORT_PATH)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _BOOK.rows:
        terminalreporter.section("reliability figures")
        for line in _BOOK.table():
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"written to {REPORT_PATH.name}")
