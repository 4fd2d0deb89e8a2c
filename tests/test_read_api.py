"""The read API over stored activities: filters, paging, detail, raw bytes, errors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import API_HEADERS, INGEST_PATH, WEBHOOK_HEADERS, condition_activity, deliver


@pytest.fixture
def seeded(client: Any) -> Any:
    for i in range(1, 13):
        deliver(
            client,
            condition_activity(
                i,
                device_id=100 + i % 3,
                organization_id=1 + i % 2,
                status="TRIGGERED" if i % 2 else "RESET",
                severity="CRITICAL" if i % 4 == 0 else "MINOR",
                activity_time=1764300000.0 + i * 60,
                message=f"message number {i}",
            ),
        )
    return client


def get(client: Any, query: str = "") -> dict[str, Any]:
    r = client.get(f"/activities{query}", headers=API_HEADERS)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def ids(page: dict[str, Any]) -> list[int]:
    return [item["id"] for item in page["items"]]


def test_newest_first_and_cursor_pages_cover_everything_once(seeded: Any) -> None:
    seen: list[int] = []
    page = get(seeded, "?limit=5")
    pages = 1
    while True:
        seen += ids(page)
        if page["nextCursor"] is None:
            break
        page = get(seeded, f"?limit=5&cursor={page['nextCursor']}")
        pages += 1
    assert seen == list(range(12, 0, -1))
    assert pages == 3


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?deviceId=101", [10, 7, 4, 1]),
        ("?organizationId=1", [12, 10, 8, 6, 4, 2]),
        ("?statusCode=RESET&severity=CRITICAL", [12, 8, 4]),
        ("?activityType=CONDITION&limit=2", [12, 11]),
        ("?activityType=SCRIPTING", []),
        ("?since=1764300300&until=1764300480", [7, 6, 5]),
        ("?since=2025-11-28T03:25:00Z&until=2025-11-28T03:28:00Z", [7, 6, 5]),
        ("?q=NUMBER 1", [12, 11, 10, 1]),
        ("?q=100%25", []),
        ("?sourceName=Disk Free Space < 10%25&deviceId=102", [11, 8, 5, 2]),
    ],
)
def test_filters(seeded: Any, query: str, expected: list[int]) -> None:
    assert ids(get(seeded, query)) == expected


def test_series_uid_filter(seeded: Any) -> None:
    uid = get(seeded, "?limit=1")["items"][0]["seriesUid"]
    assert ids(get(seeded, f"?seriesUid={uid}")) == [12]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?deviceId=abc", "deviceId"),
        ("?cursor=garbage!", "cursor"),
        ("?since=last-tuesday", "since"),
    ],
)
def test_bad_query_is_400_naming_the_parameter(seeded: Any, query: str, field: str) -> None:
    r = seeded.get(f"/activities{query}", headers=API_HEADERS)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in r.json()["detail"]


def test_detail_has_columns_and_payload(seeded: Any) -> None:
    r = seeded.get("/activities/4", headers=API_HEADERS)
    assert r.status_code == 200
    record = r.json()
    assert record["id"] == 4 and record["deviceId"] == 101 and record["organizationId"] == 1
    assert record["statusCode"] == "RESET" and record["severity"] == "CRITICAL"
    assert record["source"] == "webhook"
    assert record["receivedAt"].endswith("Z")
    assert record["payload"]["message"] == "message number 4"


def test_missing_activity_is_404_problem(client: Any) -> None:
    for path in ("/activities/999", "/activities/999/raw"):
        r = client.get(path, headers=API_HEADERS)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "999" in r.json()["detail"]


def test_rejected_deliveries_are_listed(client: Any) -> None:
    client.post(INGEST_PATH, content=b'{"id": "nope"}', headers=WEBHOOK_HEADERS)
    page = client.get("/rejected", headers=API_HEADERS).json()
    assert len(page["items"]) == 1
    item = page["items"][0]
    assert item["body"] == '{"id": "nope"}' and item["field"] == "id"
    assert "must be integer" in item["reason"]
    assert item["bodyBytes"] == 14 and item["truncated"] is False
