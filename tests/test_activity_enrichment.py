"""Activities delivered without expansion (a NinjaOne notification channel, every
backfilled activity: only ``deviceId``) show and filter by the organization and location
of their device as soon as the entity cache knows it: on ``GET /activities``, its export,
``ninjahook export`` and the dashboard. An activity's own organization and location,
when it was delivered with them, win over its device's current ones.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import sqlalchemy as sa

from app.storage.tables import devices
from tests.support import (
    API_HEADERS,
    condition_activity,
    deliver,
    run_cli,
    seed_entities,
)
from tests.support.browser import log_in


def unexpanded(activity_id: int, device_id: int, **extra: Any) -> dict[str, Any]:
    """A CONDITION activity as a notification channel (or a backfill) delivers it."""
    payload = condition_activity(activity_id, device_id=device_id, expand=False, **extra)
    assert "organizationId" not in json.dumps(payload)
    return payload


def expanded(activity_id: int, device_id: int, org: int, location: int) -> dict[str, Any]:
    return condition_activity(
        activity_id, device_id=device_id, organization_id=org, location_id=location
    )


def page_ids(client: Any, query: str, limit: int = 50) -> list[int]:
    """Every activity id ``/activities?<query>`` answers, following the cursor."""
    ids: list[int] = []
    cursor = ""
    while True:
        r = client.get(f"/activities?{query}&limit={limit}{cursor}", headers=API_HEADERS)
        assert r.status_code == 200, r.text
        page = r.json()
        ids += [item["id"] for item in page["items"]]
        if not page["nextCursor"]:
            return ids
        cursor = "&cursor=" + page["nextCursor"]


def export_ids(client: Any, query: str) -> list[int]:
    r = client.get(f"/activities/export?{query}", headers=API_HEADERS)
    assert r.status_code == 200, r.text
    return [json.loads(line)["id"] for line in r.content.splitlines()]


def cli_export(settings: dict[str, Any], *args: str) -> str:
    result = run_cli(
        ["export", *args],
        env={
            "NINJAHOOK_INSTANCE_PATH": settings["instance_path"],
            "NINJAHOOK_DATABASE_URL": settings["database_url"],
        },
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_an_unexpanded_activity_is_found_by_its_cached_devices_organization_and_location(
    client: Any, state: Any, settings: dict[str, Any]
) -> None:
    deliver(client, unexpanded(1, 42))
    # Before the cache knows the device: no organization, and no guess.
    (before,) = client.get("/activities", headers=API_HEADERS).json()["items"]
    assert (before["organizationId"], before["organizationName"]) == (None, None)
    assert (before["locationId"], before["locationName"]) == (None, None)
    assert page_ids(client, "organizationId=7") == []
    assert page_ids(client, "locationId=9") == []
    assert export_ids(client, "organizationId=7") == []

    # The cache learns the device later (a background fetch, a sync): read time decides.
    seed_entities(state.db, organization_id=7, device_id=42, location_id=9)
    assert page_ids(client, "organizationId=7") == [1]
    assert page_ids(client, "locationId=9") == [1]
    assert page_ids(client, "organizationId=7&locationId=9") == [1]
    assert page_ids(client, "organizationId=7&deviceId=42&severity=MAJOR") == [1]
    assert page_ids(client, "organizationId=7&severity=MINOR") == []
    assert page_ids(client, "organizationId=8") == []
    assert page_ids(client, "locationId=10") == []
    assert page_ids(client, "organizationId=7&locationId=10") == []
    (listed,) = client.get("/activities?organizationId=7", headers=API_HEADERS).json()["items"]
    detail = client.get("/activities/1", headers=API_HEADERS).json()
    for record in (listed, detail):
        assert record["deviceId"] == 42 and record["deviceName"] == "SRV-042"
        assert (record["organizationId"], record["organizationName"]) == (7, "Org 7")
        assert (record["locationId"], record["locationName"]) == (9, "Site 9")
        assert "organizationId" not in record["payload"]  # the payload stays as received

    # The export: the API's and the CLI's, JSON Lines and CSV (which shows the ids).
    assert export_ids(client, "organizationId=7") == [1]
    assert export_ids(client, "locationId=9") == [1]
    assert export_ids(client, "organizationId=8") == []
    r = client.get("/activities/export?format=csv&locationId=9", headers=API_HEADERS)
    (row,) = list(csv.DictReader(io.StringIO(r.text, newline="")))
    assert (row["id"], row["organizationId"], row["locationId"]) == ("1", "7", "9")
    cli_lines = cli_export(settings, "--organization", "7").splitlines()
    assert [json.loads(line)["id"] for line in cli_lines] == [1]
    assert [
        json.loads(line)["id"] for line in cli_export(settings, "--location", "9").splitlines()
    ] == [1]
    (cli_row,) = list(
        csv.DictReader(io.StringIO(cli_export(settings, "--format", "csv", "--location", "9")))
    )
    assert (cli_row["id"], cli_row["organizationId"], cli_row["locationId"]) == ("1", "7", "9")
    assert cli_export(settings, "--organization", "8") == ""


def test_an_activitys_own_organization_wins_over_its_devices(
    client: Any, state: Any, settings: dict[str, Any]
) -> None:
    seed_entities(state.db, organization_id=7, device_id=42, location_id=9)
    seed_entities(state.db, organization_id=8, device_id=43, location_id=10)
    deliver(client, unexpanded(1, 42))
    deliver(client, expanded(2, 43, org=8, location=10))
    deliver(client, unexpanded(3, 99))  # a device the cache does not know
    # Delivered in organization 8; its device has moved to organization 7 since.
    deliver(client, expanded(4, 44, org=8, location=10))
    with state.db.begin() as conn:
        conn.execute(
            sa.update(devices).where(devices.c.id == 44).values(organization_id=7, location_id=9)
        )
    deliver(client, unexpanded(5, 43))

    assert page_ids(client, "organizationId=7") == [1]
    assert page_ids(client, "organizationId=8") == [5, 4, 2]
    assert page_ids(client, "locationId=9") == [1]
    assert page_ids(client, "locationId=10") == [5, 4, 2]
    assert page_ids(client, "organizationId=8&locationId=10") == [5, 4, 2]
    assert page_ids(client, "organizationId=8&deviceId=43") == [5, 2]
    assert page_ids(client, "") == [5, 4, 3, 2, 1]
    moved = client.get("/activities/4", headers=API_HEADERS).json()
    assert (moved["organizationId"], moved["organizationName"]) == (8, "Org 8")
    assert (moved["locationId"], moved["locationName"]) == (10, "Site 10")
    unknown = client.get("/activities/3", headers=API_HEADERS).json()
    assert (unknown["organizationId"], unknown["organizationName"]) == (None, None)
    assert export_ids(client, "organizationId=8") == [2, 4, 5]
    assert export_ids(client, "organizationId=7") == [1]
    rows = list(csv.DictReader(io.StringIO(cli_export(settings, "--format", "csv"))))
    assert [(r["id"], r["organizationId"], r["locationId"]) for r in rows] == [
        ("1", "7", "9"),
        ("2", "8", "10"),
        ("3", "", ""),
        ("4", "8", "10"),
        ("5", "8", "10"),
    ]


def test_pages_and_exports_merge_own_and_cached_organizations_in_id_order(
    client: Any, state: Any
) -> None:
    seed_entities(state.db, organization_id=7, device_id=42, location_id=9)
    seed_entities(state.db, organization_id=8, device_id=43, location_id=10)
    in_org7: list[int] = []
    for n in range(1, 41):
        # Alternating runs: delivered with organization 7, through the cached device,
        # and organization 8's (which no page of organization 7 may show).
        kind = (n // 3) % 3
        if kind == 0:
            deliver(client, expanded(n, 50 + n, org=7, location=9))
            in_org7.append(n)
        elif kind == 1:
            deliver(client, unexpanded(n, 42))
            in_org7.append(n)
        else:
            deliver(client, unexpanded(n, 43))
    newest_first = sorted(in_org7, reverse=True)
    for limit in (1, 3, 7, 50):
        assert page_ids(client, "organizationId=7", limit=limit) == newest_first
        assert page_ids(client, "locationId=9", limit=limit) == newest_first
    # A text search (the FTS path on SQLite, pg_trgm on PostgreSQL) with the filter.
    assert page_ids(client, "organizationId=7&q=free%20space", limit=4) == newest_first
    assert page_ids(client, "organizationId=7&q=no%20such%20text") == []
    assert export_ids(client, "organizationId=7") == sorted(in_org7)


def test_export_batches_merge_both_ways_in_id_order(state: Any, client: Any) -> None:
    from app.activities.export import export_chunks
    from app.storage.activities import ActivityFilter

    seed_entities(state.db, organization_id=7, device_id=42, location_id=9)
    for n in range(1, 26):
        if n % 2:
            deliver(client, unexpanded(n, 42))
        else:
            deliver(client, expanded(n, 60, org=7, location=9))
    chunks = export_chunks(
        state.db, ActivityFilter(organization_id=7), "jsonl", batch_rows=4, batch_bytes=1500
    )
    ids = [json.loads(line)["id"] for chunk, _ in chunks for line in chunk.splitlines()]
    assert ids == list(range(1, 26))


def test_the_dashboard_filters_activities_by_the_cached_organization(
    client: Any, state: Any
) -> None:
    seed_entities(state.db, organization_id=7, device_id=42, location_id=9)
    seed_entities(state.db, organization_id=8, device_id=43, location_id=10)
    deliver(client, unexpanded(1, 42, status="RESET", message="seven via device"))
    deliver(client, unexpanded(2, 43, status="RESET", message="eight via device"))
    log_in(client)

    def recent(query: str) -> list[str]:
        page = client.get(f"/ui/live?{query}").text
        return re.findall(r'<li class="activity[^"]*" data-id="(\d+)">', page)

    assert recent("") == ["2", "1"]
    assert recent("organizationId=7") == ["1"]
    assert recent("organizationId=8") == ["2"]
    row = re.search(r'data-id="1">.*?</li>', client.get("/ui/live?organizationId=7").text, re.S)
    assert row is not None and "SRV-042 · Org 7" in row.group()
