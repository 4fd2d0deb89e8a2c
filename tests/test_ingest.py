"""Ingest semantics: authentication, validation, exactly-once storage, rejected deliveries."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.storage import activities as store
from tests.support import (
    API_HEADERS,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    WEBHOOK_TOKEN,
    body,
    condition_activity,
    minimal_activity,
)


def stored_ids(state: Any) -> list[int]:
    with state.db.connect() as conn:
        return [r.id for r in store.list_activities(conn, store.ActivityFilter(), limit=1000)]


def rejected(state: Any) -> list[Any]:
    with state.db.connect() as conn:
        return store.list_rejected(conn, limit=100)


def test_valid_delivery_is_stored_with_columns_and_exact_bytes(client: Any, state: Any) -> None:
    payload = condition_activity(1001)
    raw = json.dumps(payload, indent=3).encode()  # odd formatting must survive byte for byte
    r = client.post(INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS)
    assert r.status_code == 200
    assert r.json() == {"id": 1001, "duplicate": False}
    with state.db.connect() as conn:
        row = store.get_activity(conn, 1001)
    assert row is not None
    assert bytes(row.raw) == raw
    assert row.device_id == 42
    assert row.organization_id == 7 and row.location_id == 9
    assert row.activity_type == "CONDITION" and row.status_code == "TRIGGERED"
    assert row.severity == "MAJOR" and row.priority == "HIGH"
    assert row.series_uid == payload["seriesUid"]
    assert row.source_config_uid == payload["sourceConfigUid"]
    assert row.source_name == "Disk Free Space < 10%"
    assert row.activity_time == pytest.approx(1764300000.123456789)
    assert row.source == "webhook" and row.received_at > 0


def test_minimal_delivery_without_optional_fields(client: Any, state: Any) -> None:
    r = client.post(INGEST_PATH, content=body({"id": 5}), headers=WEBHOOK_HEADERS)
    assert r.status_code == 200
    r = client.post(INGEST_PATH, content=body(minimal_activity(6)), headers=WEBHOOK_HEADERS)
    assert r.status_code == 200
    assert sorted(stored_ids(state)) == [5, 6]


def test_nulls_and_extra_properties_are_accepted_and_kept(client: Any, state: Any) -> None:
    payload = {
        "id": 7,
        "severity": None,
        "priority": None,
        "seriesUid": None,
        "data": None,
        "device": None,
        "somethingNew": {"nested": [1, 2]},
        "activityResult": None,
    }
    r = client.post(INGEST_PATH, content=body(payload), headers=WEBHOOK_HEADERS)
    assert r.status_code == 200
    detail = client.get("/activities/7", headers=API_HEADERS).json()
    assert detail["payload"]["somethingNew"] == {"nested": [1, 2]}


def test_redelivery_is_a_duplicate_and_first_delivery_wins(client: Any, state: Any) -> None:
    first = condition_activity(2000, message="first")
    second = condition_activity(2000, message="second")
    assert client.post(INGEST_PATH, content=body(first), headers=WEBHOOK_HEADERS).json() == {
        "id": 2000,
        "duplicate": False,
    }
    r = client.post(INGEST_PATH, content=body(second), headers=WEBHOOK_HEADERS)
    assert r.status_code == 200 and r.json() == {"id": 2000, "duplicate": True}
    with state.db.connect() as conn:
        stored = store.get_activity(conn, 2000)
        assert stored is not None and stored.message == "first"
        assert store.count_activities(conn) == 1


def test_query_token_is_accepted(client: Any, state: Any) -> None:
    r = client.post(
        f"{INGEST_PATH}?token={WEBHOOK_TOKEN}",
        content=body(minimal_activity(8)),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200
    assert stored_ids(state) == [8]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-wrong-token"},
        {"Authorization": f"Bearer {WEBHOOK_TOKEN[:-1]}"},
        {"Authorization": f"Bearer {WEBHOOK_TOKEN}x"},
        {"Authorization": f"Basic {WEBHOOK_TOKEN}"},
        {"Authorization": "Bearer api_test_token_0123456789abcdef"},  # a read token
    ],
)
def test_unauthenticated_delivery_is_401_and_nothing_is_stored(
    client: Any, state: Any, headers: dict[str, str]
) -> None:
    r = client.post(
        INGEST_PATH,
        content=body(condition_activity(9)),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert stored_ids(state) == []
    assert rejected(state) == []


def test_unauthenticated_invalid_body_is_401_not_kept(client: Any, state: Any) -> None:
    r = client.post(INGEST_PATH, content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    assert rejected(state) == []


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (b"{bad json", None, "malformed JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b'"text"', None, "must be a JSON object"),
        (b"", None, "empty"),
        (b'{"activityType": "CONDITION"}', "id", "id"),
        (b'{"id": "123"}', "id", "must be integer"),
        (b'{"id": 1.5}', "id", "must be integer"),
        (b'{"id": true}', "id", "must be integer"),
        (b'{"id": 1, "deviceId": "42"}', "deviceId", "must be integer"),
        (b'{"id": 1, "activityTime": "yesterday"}', "activityTime", "must be number"),
        (b'{"id": 1, "message": 12}', "message", "must be string"),
        (b'{"id": 1, "data": [1]}', "data", "must be object"),
        (b'{"id": 1, "device": {"organizationId": "x"}}', "device.organizationId", "integer"),
        (b'{"id": 1234567890123456789012345678901234567890}', "id", "id"),
        (b'{"id": 1, "activityTime": NaN}', None, "NaN"),
        (b'{"id": 1, "activityTime": Infinity}', None, "Infinity"),
        (b'{"id": 1, "id": 2}', "id", "duplicate key"),
        (b'{"id": 1, "message": "\xff\xfe"}', None, "UTF-8"),
        (b"[" * 10000 + b"]" * 10000, None, "nested too deeply"),
        (b'{"id": 1, "data": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}", None, "nested"),
    ],
)
def test_authenticated_invalid_body_is_400_naming_the_cause_and_kept(
    client: Any, state: Any, raw: bytes, field: str | None, words: str
) -> None:
    r = client.post(INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert words in problem["detail"]
    if field is not None:
        assert problem.get("field") == field or problem["detail"].startswith(field)
    assert stored_ids(state) == []
    kept = rejected(state)
    assert len(kept) == 1
    assert bytes(kept[0].body) == raw
    assert kept[0].reason == problem["detail"]


def test_unknown_enum_values_are_accepted_and_counted_as_drift(
    client: Any, state: Any, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(3):
        payload = condition_activity(
            3000 + i, activityType="QUANTUM_FLUX", statusCode="WOBBLED", severity="APOCALYPTIC"
        )
        payload["device"]["nodeClass"] = "TOASTER"
        assert (
            client.post(INGEST_PATH, content=body(payload), headers=WEBHOOK_HEADERS).status_code
            == 200
        )
    # A redelivery is not a new sighting.
    client.post(INGEST_PATH, content=body(payload), headers=WEBHOOK_HEADERS)
    drift = {
        (d["field"], d["value"]): d["count"]
        for d in client.get("/spec-drift", headers=API_HEADERS).json()["items"]
    }
    assert drift == {
        ("activityType", "QUANTUM_FLUX"): 3,
        ("statusCode", "WOBBLED"): 3,
        ("severity", "APOCALYPTIC"): 3,
        ("device.nodeClass", "TOASTER"): 3,
    }
    warnings = [r for r in caplog.records if "spec drift" in r.getMessage()]
    assert len([w for w in warnings if "QUANTUM_FLUX" in w.getMessage()]) == 1


def test_known_values_are_not_drift(client: Any) -> None:
    client.post(INGEST_PATH, content=body(condition_activity(3100)), headers=WEBHOOK_HEADERS)
    assert client.get("/spec-drift", headers=API_HEADERS).json()["items"] == []


def test_wrong_content_type_is_415(client: Any, state: Any) -> None:
    r = client.post(
        INGEST_PATH,
        content=body(minimal_activity(11)),
        headers={**WEBHOOK_HEADERS, "Content-Type": "text/plain"},
    )
    assert r.status_code == 415
    assert r.headers["content-type"].startswith("application/problem+json")
    assert stored_ids(state) == []


def test_body_over_the_limit_is_413_with_content_length(make_app: Any) -> None:
    app = make_app(max_body_bytes="2048")
    with app.test_client() as client:
        payload = minimal_activity(12, message="x" * 4000)
        r = client.post(INGEST_PATH, content=body(payload), headers=WEBHOOK_HEADERS)
        assert r.status_code == 413
        assert r.headers["content-type"].startswith("application/problem+json")
        small = client.post(
            INGEST_PATH, content=body(minimal_activity(13)), headers=WEBHOOK_HEADERS
        )
        assert small.status_code == 200


def test_body_over_the_limit_is_413_when_streamed_without_length(make_app: Any) -> None:
    from tests.support import live_server

    app = make_app(max_body_bytes="4096")

    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1000

    with live_server(app) as srv:
        r = httpx.post(srv.url + INGEST_PATH, content=chunks(), headers=WEBHOOK_HEADERS)
        assert r.status_code == 413
        ok = httpx.post(
            srv.url + INGEST_PATH, content=body(minimal_activity(14)), headers=WEBHOOK_HEADERS
        )
        assert ok.status_code == 200


def test_chunked_delivery_is_accepted(server: Any, state: Any) -> None:
    raw = body(condition_activity(15))

    def chunks() -> Any:
        for i in range(0, len(raw), 100):
            yield raw[i : i + 100]

    r = httpx.post(server.url + INGEST_PATH, content=chunks(), headers=WEBHOOK_HEADERS)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": 15, "duplicate": False}
    raw_back = httpx.get(server.url + "/activities/15/raw", headers=API_HEADERS)
    assert raw_back.content == raw


def test_storage_unavailable_is_503_never_2xx_or_400(make_app: Any, tmp_path: Any) -> None:
    app = make_app(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    with app.test_client() as client:
        r = client.post(INGEST_PATH, content=body(minimal_activity(16)), headers=WEBHOOK_HEADERS)
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "Retry-After" in r.headers
        # An invalid body cannot be kept either: 503 so the sender retries, not 400.
        r = client.post(INGEST_PATH, content=b"{bad", headers=WEBHOOK_HEADERS)
        assert r.status_code == 503
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200


def test_unknown_read_token_and_webhook_token_cannot_read(client: Any) -> None:
    assert client.get("/activities").status_code == 401
    assert (
        client.get("/activities", headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}).status_code
        == 401
    )
    assert client.get(f"/activities?token={WEBHOOK_TOKEN}").status_code == 401
    assert client.get("/activities", headers=API_HEADERS).status_code == 200


def test_two_webhook_tokens_during_rotation(make_app: Any) -> None:
    old, new = "old_token_0123456789abcdef", "new_token_0123456789abcdef"
    app = make_app(webhook_tokens=f"{old},{new}")
    with app.test_client() as client:
        for i, token in enumerate((old, new)):
            r = client.post(
                INGEST_PATH,
                content=body(minimal_activity(20 + i)),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            assert r.status_code == 200
    app = make_app(webhook_tokens=new)
    with app.test_client() as client:
        r = client.post(
            INGEST_PATH,
            content=body(minimal_activity(30)),
            headers={"Authorization": f"Bearer {old}", "Content-Type": "application/json"},
        )
        assert r.status_code == 401
