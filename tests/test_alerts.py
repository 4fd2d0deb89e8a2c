"""Alerts from CONDITION deliveries: lifecycle, order independence, reads, rebuild."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from app.alerts import service as alerts
from app.alerts.service import alert_key
from app.cli.main import main as cli
from app.ingest.pipeline import Stage
from app.ingest.service import ingest_activity
from app.storage import alerts as alert_store
from app.storage.alerts import all_alerts
from tests.support import (
    API_HEADERS,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    body,
    condition_activity,
    deliver,
    minimal_activity,
    recorded_statements,
    seed_entities,
)

T0 = 1764300000.0
SERIES = "5f0c1c4e-0000-4000-8000-00000000a11e"


def alert(client: Any, key: str) -> dict[str, Any]:
    r = client.get(f"/alerts/{key}", headers=API_HEADERS)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def alerts_page(client: Any, query: str = "") -> dict[str, Any]:
    r = client.get(f"/alerts{query}", headers=API_HEADERS)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def lifecycle(
    series: str = SERIES, start_id: int = 1000, device_id: int = 42
) -> list[dict[str, Any]]:
    """TRIGGERED, ACKNOWLEDGED, RESET of one condition, a minute apart."""
    return [
        condition_activity(
            start_id + n,
            status=status,
            series_uid=series,
            device_id=device_id,
            activity_time=T0 + 60 * n,
        )
        for n, status in enumerate(("TRIGGERED", "ACKNOWLEDGED", "RESET"))
    ]


def test_history_of_unexpanded_activities_names_them_as_the_read_api_does(
    client: Any, state: Any
) -> None:
    """History items are ActivityRecords: like /activities/{id}, an activity delivered
    without expansion gets its organization and location through its cached device."""
    seed_entities(state.db, organization_id=7, device_id=42, location_id=9)
    bare = condition_activity(1100, series_uid=SERIES, activity_time=T0, expand=False)
    deliver(client, bare)
    (item,) = alert(client, SERIES)["history"]
    record = client.get("/activities/1100", headers=API_HEADERS).json()
    names = ("deviceName", "organizationName", "locationName")
    assert [item[n] for n in names] == ["SRV-042", "Org 7", "Site 9"]
    assert [item[n] for n in names] == [record[n] for n in names]


def test_trigger_opens_and_reset_closes_with_names_from_the_entity_cache(
    client: Any, state: Any
) -> None:
    seed_entities(state.db, organization_id=7, device_id=42, location_id=9)
    triggered, acknowledged, reset = lifecycle()
    deliver(client, triggered)
    opened = alert(client, SERIES)
    assert opened["state"] == "open"
    assert opened["acknowledged"] is False
    assert opened["openedAt"] == pytest.approx(T0)
    assert (opened["deviceName"], opened["organizationName"], opened["locationName"]) == (
        "SRV-042",
        "Org 7",
        "Site 9",
    )
    assert opened["severity"] == "MAJOR"
    assert [h["id"] for h in opened["history"]] == [triggered["id"]]
    deliver(client, acknowledged)
    assert alert(client, SERIES)["acknowledged"] is True
    deliver(client, reset)
    closed = alert(client, SERIES)
    assert closed["state"] == "closed"
    assert closed["closedAt"] == pytest.approx(T0 + 120)
    assert [h["statusCode"] for h in closed["history"]] == ["TRIGGERED", "ACKNOWLEDGED", "RESET"]
    assert closed["history"][0]["payload"]["seriesUid"] == SERIES


def test_reset_arriving_before_its_trigger_leaves_the_alert_closed(client: Any) -> None:
    triggered, _, reset = lifecycle()
    deliver(client, reset)
    assert alert(client, SERIES)["state"] == "closed"
    deliver(client, triggered)
    late = alert(client, SERIES)
    assert late["state"] == "closed"
    assert late["openedAt"] == pytest.approx(T0)
    assert late["closedAt"] == pytest.approx(T0 + 120)
    assert alerts_page(client)["items"] == []


def test_a_new_trigger_after_a_reset_reopens_the_alert(client: Any) -> None:
    triggered, _, reset = lifecycle()
    again = condition_activity(2000, series_uid=SERIES, activity_time=T0 + 600, severity="CRITICAL")
    for payload in (triggered, reset, again):
        deliver(client, payload)
    reopened = alert(client, SERIES)
    assert (reopened["state"], reopened["severity"]) == ("open", "CRITICAL")
    assert reopened["openedAt"] == pytest.approx(T0 + 600)
    assert reopened["closedAt"] is None


def test_redeliveries_change_nothing(client: Any, state: Any) -> None:
    triggered, _, reset = lifecycle()
    deliver(client, triggered)
    deliver(client, reset)
    with state.db.connect() as conn:
        before = all_alerts(conn)
    assert deliver(client, triggered)["duplicate"] is True
    with state.db.connect() as conn:
        assert all_alerts(conn) == before
    assert len(alert(client, SERIES)["history"]) == 2


def test_without_series_uid_the_key_is_device_and_source_config(client: Any) -> None:
    payload = condition_activity(3000)
    del payload["seriesUid"]
    key = f"42:{payload['sourceConfigUid']}"
    assert alert_key(payload) == key
    deliver(client, payload)
    assert alert(client, key)["state"] == "open"


def test_other_activity_types_make_no_alert(client: Any) -> None:
    deliver(client, condition_activity(3100, activityType="SYSTEM"))
    assert alerts_page(client, "?state=all")["items"] == []


def test_condition_subtypes_make_alerts(client: Any) -> None:
    deliver(client, condition_activity(3200, series_uid="sub", activityType="CONDITION_ACTION"))
    assert alert(client, "sub")["activityType"] == "CONDITION_ACTION"


def test_list_filters_by_state_organization_device_and_severity(client: Any) -> None:
    deliver(client, condition_activity(1, series_uid="a", organization_id=1, device_id=10))
    deliver(
        client,
        condition_activity(2, series_uid="b", organization_id=2, device_id=20, severity="MINOR"),
    )
    deliver(client, condition_activity(3, series_uid="c", organization_id=2, device_id=21))
    deliver(
        client,
        condition_activity(
            4, series_uid="c", status="RESET", organization_id=2, device_id=21, activity_time=T0 + 9
        ),
    )

    def keys(query: str) -> list[str]:
        return [a["key"] for a in alerts_page(client, query)["items"]]

    assert keys("") == ["b", "a"]
    assert keys("?state=closed") == ["c"]
    assert keys("?state=all") == ["c", "b", "a"]
    assert keys("?organizationId=2") == ["b"]
    assert keys("?state=all&organizationId=2&deviceId=21") == ["c"]
    assert keys("?severity=MINOR") == ["b"]


def test_list_pages_with_a_cursor(client: Any) -> None:
    for n in range(5):
        deliver(client, condition_activity(100 + n, series_uid=f"s{n}"))
    seen: list[str] = []
    query = "?limit=2"
    while True:
        page = alerts_page(client, query)
        seen += [a["key"] for a in page["items"]]
        if page["nextCursor"] is None:
            break
        query = f"?limit=2&cursor={page['nextCursor']}"
    assert seen == ["s4", "s3", "s2", "s1", "s0"]


def test_unknown_alert_is_404_and_bad_state_is_400(client: Any) -> None:
    assert client.get("/alerts/nope", headers=API_HEADERS).status_code == 404
    r = client.get("/alerts?state=broken", headers=API_HEADERS)
    assert r.status_code == 400
    assert "state" in r.json()["detail"]
    assert client.get("/alerts").status_code == 401


def _history(seed: int) -> list[dict[str, Any]]:
    """Several conditions on several devices, each triggered, acknowledged, reset and
    triggered again at random, with some events sharing one activityTime."""
    rng = random.Random(seed)
    payloads = []
    next_id = 10_000
    for series in range(12):
        for step in range(rng.randint(1, 6)):
            status = rng.choice(["TRIGGERED", "TRIGGERED", "RESET", "ACKNOWLEDGED"])
            payload = condition_activity(
                next_id,
                status=status,
                series_uid=None if series % 4 == 0 else f"series-{series}",
                device_id=40 + series % 3,
                organization_id=1 + series % 2,
                activity_time=T0 + 30 * (step // 2),
                severity=rng.choice(["MINOR", "MAJOR", "CRITICAL", None]),
                sourceConfigUid=f"policy-{series}",
            )
            if series % 4 == 0:
                del payload["seriesUid"]
            payloads.append(payload)
            next_id += 1
    return payloads


def test_shuffled_delivery_orders_and_rebuild_give_identical_alerts(
    make_app: Any, database_url: str
) -> None:
    payloads = _history(seed=4)
    app = make_app()
    state = app.app.extensions["ninjahook"]
    results = []
    for order_seed in (1, 2, 3):
        shuffled = payloads[:]
        random.Random(order_seed).shuffle(shuffled)
        with state.db.begin() as conn:
            conn.exec_driver_sql("DELETE FROM alert_activities")
            conn.exec_driver_sql("DELETE FROM alerts")
            conn.exec_driver_sql("DELETE FROM activities")
        for payload in shuffled + shuffled[:5]:  # and a few redeliveries
            ingest_activity(state, body(payload), payload)
        with state.db.connect() as conn:
            results.append(all_alerts(conn))
    assert results[0] == results[1] == results[2]
    assert {r.state for r in results[0]} == {"open", "closed"}
    assert len(results[0]) == 12
    with app.test_client() as client:
        detail = alert(client, results[0][0].key)
    assert len(detail["history"]) >= 1

    outcome = CliRunner().invoke(cli, ["--database-url", database_url, "alerts", "rebuild"])
    assert outcome.exit_code == 0, outcome.output
    assert "12 alerts" in outcome.output
    with state.db.connect() as conn:
        assert all_alerts(conn) == results[0]


def test_concurrent_deliveries_of_one_alert_end_like_a_rebuild(server: Any, state: Any) -> None:
    rng = random.Random(9)
    payloads = [
        condition_activity(
            500 + n,
            series_uid="contended",
            status=rng.choice(["TRIGGERED", "RESET", "ACKNOWLEDGED"]),
            activity_time=T0 + rng.randint(0, 20),
        )
        for n in range(40)
    ]

    def post(payload: dict[str, Any]) -> int:
        with httpx.Client(base_url=server.url) as http:
            return http.post(
                INGEST_PATH, content=body(payload), headers=WEBHOOK_HEADERS
            ).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(post, payloads)) == {200}
    with state.db.connect() as conn:
        incremental = all_alerts(conn)
    with state.db.begin() as conn:
        alerts.rebuild(conn)
    with state.db.connect() as conn:
        assert all_alerts(conn) == incremental
    assert [r.key for r in incremental] == ["contended"]


def _rebuilt(state: Any) -> list[Any]:
    """Every alert row as ``alerts rebuild`` computes it, leaving the stored rows as they were."""
    with state.db.connect() as conn:
        trans = conn.begin()
        alerts.rebuild(conn)
        rows = all_alerts(conn)
        trans.rollback()
    return rows


def _event(activity_id: int, status: str, seconds: float, **extra: Any) -> dict[str, Any]:
    return condition_activity(
        activity_id, status=status, series_uid=SERIES, activity_time=T0 + seconds, **extra
    )


# Delivery orders as (id, statusCode, seconds after T0), with the alert they must end in.
SEQUENCES: dict[str, tuple[list[tuple[int, str, float]], str, bool]] = {
    "redeliveries of every step": (
        [
            (1, "TRIGGERED", 0),
            (1, "TRIGGERED", 0),
            (2, "ACKNOWLEDGED", 60),
            (1, "TRIGGERED", 0),
            (3, "RESET", 120),
            (2, "ACKNOWLEDGED", 60),
            (3, "RESET", 120),
        ],
        "closed",
        True,
    ),
    "RESET before its TRIGGERED": ([(3, "RESET", 120), (1, "TRIGGERED", 0)], "closed", False),
    "RESET, then ACKNOWLEDGED, then TRIGGERED, all late": (
        [(3, "RESET", 120), (2, "ACKNOWLEDGED", 60), (1, "TRIGGERED", 0)],
        "closed",
        True,
    ),
    "a new TRIGGERED after RESET clears the acknowledgement": (
        [(1, "TRIGGERED", 0), (2, "ACKNOWLEDGED", 60), (3, "RESET", 120), (4, "TRIGGERED", 180)],
        "open",
        False,
    ),
    "a late ACKNOWLEDGED still acknowledges the open alert": (
        [(1, "TRIGGERED", 0), (4, "TRIGGERED", 180), (2, "ACKNOWLEDGED", 60)],
        "open",
        True,
    ),
    "same activityTime: the lower id goes first": (
        [(5, "TRIGGERED", 0), (4, "RESET", 0)],
        "open",
        False,
    ),
}


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_delivery_orders_end_like_a_rebuild(state: Any, name: str) -> None:
    order, expected_state, expected_acknowledged = SEQUENCES[name]
    for activity_id, status, seconds in order:
        payload = _event(activity_id, status, seconds)
        ingest_activity(state, body(payload), payload)
    with state.db.connect() as conn:
        stored = all_alerts(conn)
    assert [(r.key, r.state, r.acknowledged) for r in stored] == [
        (SERIES, expected_state, expected_acknowledged)
    ]
    assert stored == _rebuilt(state)


def test_many_repeated_triggers_keep_the_latest_description(state: Any) -> None:
    severities = ["MINOR", "MAJOR", "CRITICAL"]
    for n in range(60):
        payload = _event(100 + n, "TRIGGERED", n, severity=severities[n % 3])
        ingest_activity(state, body(payload), payload)
    with state.db.connect() as conn:
        (row,) = all_alerts(conn)
    assert (row.state, row.severity, row.opened_at, row.last_activity_id) == (
        "open",
        severities[59 % 3],
        pytest.approx(T0),
        159,
    )
    assert [row] == _rebuilt(state)
    # A late trigger between two others changes neither the description nor the opening.
    late = _event(99, "TRIGGERED", 30.5, severity="INFO")
    ingest_activity(state, body(late), late)
    with state.db.connect() as conn:
        assert all_alerts(conn) == [row] == _rebuilt(state)
    with state.db.connect() as conn:
        assert len(alert_store.alert_events(conn, SERIES)) == 61


def _alert_statements(state: Any, payload: dict[str, Any]) -> list[str]:
    state.pipeline.stages[:] = [Stage("alerts", alerts.apply_new_activity)]
    with recorded_statements(state.db.engine) as statements:
        ingest_activity(state, body(payload), payload)
    return [s for s in statements if "alert" in s.lower()]


def test_an_activity_in_order_is_applied_without_reading_the_history(state: Any) -> None:
    first = _alert_statements(state, _event(1, "TRIGGERED", 0))
    newer = _alert_statements(state, _event(2, "ACKNOWLEDGED", 60))
    # Lock-and-read the alert row, link the activity, write the row.
    assert len(first) == len(newer) == 3
    assert not any("join" in s.lower() for s in first + newer)
    late = _alert_statements(state, _event(0, "RESET", -60))
    assert len(late) == 4 and sum("join" in s.lower() for s in late) == 1
    assert _rebuilt(state)[0].state == "open"


def test_other_activities_cost_the_alerts_hook_no_statement(state: Any) -> None:
    assert _alert_statements(state, minimal_activity(7)) == []
    assert _alert_statements(state, condition_activity(8, activityType="SYSTEM")) == []
