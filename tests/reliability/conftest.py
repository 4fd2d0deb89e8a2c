"""The figures every soak scenario reports, printed at the end and written to
build/reliability/RELIABILITY.md (`make reliability` copies it over the tracked RELIABILITY.md)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.figures import FigureBook
from tests.support import ROOT

# build/ is git-ignored: a soak run never changes a tracked file.
REPORT_PATH = ROOT / "build" / "reliability" / "RELIABILITY.md"


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
        terminalreporter.write_line(f"written to {REPORT_PATH.relative_to(ROOT)}")
