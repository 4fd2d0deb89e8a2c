"""Times as users write them, on the command line and in the read API."""

from __future__ import annotations

import pytest

from app.timeparse import parse_instant


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1764300000", 1764300000.0),
        ("1764300000.25", 1764300000.25),
        ("2025-11-28T03:20:00Z", 1764300000.0),
        ("2025-11-28T03:20:00", 1764300000.0),  # naive means UTC
        ("2025-11-28T04:20:00+01:00", 1764300000.0),
        ("90s", 1000.0 - 90),
        ("15m", 1000.0 - 900),
        ("2h", 10000.0 - 7200),
        ("1.5d", 200000.0 - 129600),
    ],
)
def test_accepted_forms(text: str, expected: float) -> None:
    now = {"90s": 1000.0, "15m": 1000.0, "2h": 10000.0, "1.5d": 200000.0}.get(text)
    assert parse_instant(text, now=now) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["yesterday", "", "12x", "d", "2026-13-40"])
def test_rejected_forms_name_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="expected ISO 8601"):
        parse_instant(text)


def test_ages_can_be_refused() -> None:
    with pytest.raises(ValueError, match="epoch seconds, got '6h'"):
        parse_instant("6h", allow_age=False)
