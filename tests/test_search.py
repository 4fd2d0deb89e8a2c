"""Search on /activities: organization, location, source, text and time ranges."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import API_HEADERS, condition_activity, deliver, minimal_activity

T0 = 1764300000.0


@pytest.fixture
def seeded(client: Any) -> Any:
    rows = [
        (1, 7, 9, "Disk Free Space < 10%", "C: has 8% free", "Disk space low", T0),
        (2, 7, 10, "CPU > 90%", "CPU at 97% for 5 minutes", None, T0 + 3600),
        (3, 8, 11, "Disk Free Space < 10%", "D: has 2% free", "Disk almost full", T0 + 7200),
        (4, 8, 11, "Memory > 95%", "memory_pressure at 99%", "RAM", T0 + 86400),
    ]
    for activity_id, org, loc, source, message, subject, when in rows:
        payload = condition_activity(
            activity_id,
            organization_id=org,
            location_id=loc,
            sourceName=source,
            message=message,
            activity_time=when,
        )
        if subject is None:
            del payload["subject"]
        else:
            payload["subject"] = subject
        deliver(client, payload)
    deliver(client, minimal_activity(5, activityTime=T0 + 10, message="Device approved"))
    return client


def ids(client: Any, query: str) -> list[int]:
    r = client.get(f"/activities?{query}", headers=API_HEADERS)
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("organizationId=7", [2, 1]),
        ("organizationId=8&locationId=11", [4, 3]),
        ("locationId=10", [2]),
        ("sourceName=Disk%20Free%20Space%20%3C%2010%25", [3, 1]),
        ("q=free", [3, 1]),
        ("q=DISK", [3, 1]),  # case-insensitive, matches the subject too
        ("q=almost", [3]),  # only in the subject
        ("q=8%25", [1]),  # a literal %, not a wildcard
        ("q=_", [4]),  # a literal underscore
        ("q=free&organizationId=8", [3]),
        (f"since={T0 + 3600:.0f}", [4, 3, 2]),
        (f"until={T0 + 3600:.0f}", [5, 1]),
        ("since=2025-11-28T04:20:00Z&until=2025-11-29T00:00:00Z", [3, 2]),
        ("since=2025-11-28T04:20:00%2B00:00", [4, 3, 2]),
        ("since=2025-11-28T04:20:00&organizationId=7", [2]),
    ],
)
def test_search(seeded: Any, query: str, expected: list[int]) -> None:
    assert ids(seeded, query) == expected


def test_search_pages_with_a_cursor(seeded: Any) -> None:
    first = seeded.get("/activities?q=free&limit=1", headers=API_HEADERS).json()
    assert [i["id"] for i in first["items"]] == [3]
    cursor = first["nextCursor"]
    second = seeded.get(f"/activities?q=free&limit=1&cursor={cursor}", headers=API_HEADERS).json()
    assert [i["id"] for i in second["items"]] == [1]
    assert second["nextCursor"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=yesterday", "since"),
        ("until=2025-13-01", "until"),
        ("organizationId=seven", "organizationId"),
        ("locationId=1.5", "locationId"),
    ],
)
def test_bad_search_is_400_naming_the_parameter(seeded: Any, query: str, field: str) -> None:
    r = seeded.get(f"/activities?{query}", headers=API_HEADERS)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in r.json()["detail"]


def test_query_benchmark_runs_and_writes_its_own_section(tmp_path: Any) -> None:
    from bench import query

    figures = query.run(f"sqlite:///{tmp_path / 'bench.sqlite3'}", rows=3000, repeat=1, quiet=True)
    assert figures["rows"] == 3000
    pages = figures["queries"]
    assert pages["no filter, first page"]["items"] == query.PAGE
    assert 0 < pages["organizationId"]["items"] < query.PAGE  # about 3000 / 200 rows
    assert pages["q, common word"]["items"] == query.PAGE
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n## Query\n\nold figures\n\n## Ingest\n\nkept\n")
    query.write_markdown(query.markdown([figures]), report)
    text = report.read_text()
    assert "old figures" not in text
    assert "| organizationId |" in text
    assert text.endswith("## Ingest\n\nkept\n")
