"""What each soak scenario reports: sent, acknowledged, stored and lost."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path


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
            "Written by `make soak` (the tests marked `slow` in tests/reliability/) to "
            "build/reliability/RELIABILITY.md; `make reliability` runs it and copies the "
            "file to the tracked RELIABILITY.md. "
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
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(text))
