"""Odd but reproducible input: media-type case, float ids, tampered cursors, shared tokens.

Each case was reported by a user; every test here runs on each configured backend
(``database_url``) unless it needs no database.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from app.config import ConfigError, load_config
from app.paging import encode_cursor
from app.storage import activities as store
from app.web.middleware import normalize_content_type
from tests.support import (
    API_HEADERS,
    API_TOKEN,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    WEBHOOK_TOKEN,
    body,
    condition_activity,
    deliver,
    minimal_activity,
    run_cli,
)


def stored_ids(state: Any) -> list[int]:
    with state.db.connect() as conn:
        return sorted(r.id for r in store.list_activities(conn, store.ActivityFilter(), limit=1000))


def kept_rejections(state: Any) -> list[Any]:
    with state.db.connect() as conn:
        return store.list_rejected(conn, limit=100)


# --- 1. Content-Type is case-insensitive ------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "Application/Json",
        "APPLICATION/JSON",
        "application/JSON; charset=utf-8",
        "Application/Json; Charset=UTF-8",
        "application/json ; charset=utf-8",
        "application/json;charset=utf-8",
    ],
)
def test_content_type_in_any_case_is_a_valid_delivery(
    client: Any, state: Any, content_type: str
) -> None:
    headers = {**WEBHOOK_HEADERS, "Content-Type": content_type}
    r = client.post(INGEST_PATH, content=body(minimal_activity(101)), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": 101, "duplicate": False}
    assert stored_ids(state) == [101]
    assert kept_rejections(state) == []


def test_content_type_in_any_case_is_still_validated_and_kept(client: Any, state: Any) -> None:
    # The body validator runs: an invalid body is a 400 naming the field, and is kept.
    headers = {**WEBHOOK_HEADERS, "Content-Type": "Application/Json"}
    raw = b'{"id": 1, "deviceId": "x"}'
    r = client.post(INGEST_PATH, content=raw, headers=headers)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == "deviceId"
    assert stored_ids(state) == []
    kept = kept_rejections(state)
    assert len(kept) == 1 and bytes(kept[0].body) == raw


@pytest.mark.parametrize("content_type", ["Text/Plain", "APPLICATION/XML; charset=utf-8"])
def test_other_media_types_in_any_case_are_still_415(
    client: Any, state: Any, content_type: str
) -> None:
    headers = {**WEBHOOK_HEADERS, "Content-Type": content_type}
    r = client.post(INGEST_PATH, content=body(minimal_activity(102)), headers=headers)
    assert r.status_code == 415, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert stored_ids(state) == []


@pytest.mark.parametrize(
    ("sent", "normalized"),
    [
        (b"Application/Json", b"application/json"),
        (b"application/json; Charset=UTF-8", b"application/json;charset=UTF-8"),
        (b" Application/Json ;  charset=utf-8 ; ", b"application/json;charset=utf-8"),
        (b"Multipart/Form-Data; Boundary=AbC", b"multipart/form-data;boundary=AbC"),
        (b"application/json", b"application/json"),
    ],
)
def test_normalize_content_type_lowers_names_and_keeps_values(
    sent: bytes, normalized: bytes
) -> None:
    assert normalize_content_type(sent) == normalized


# --- 2. Integer fields take JSON integers only ------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"id": 9007199254740993.0}', "id"),
        (b'{"id": 1.0}', "id"),
        (b'{"id": 1e3}', "id"),
        (b'{"id": 1E3}', "id"),
        (b'{"id": 5.5}', "id"),
        (b'{"id": -0.0}', "id"),
        (b'{"id": 9223372036854775808}', "id"),
        (b'{"id": -9223372036854775809}', "id"),
        (b'{"id": 7, "deviceId": 17.0}', "deviceId"),
        (b'{"id": 7, "userId": 1e2}', "userId"),
        (b'{"id": 7, "device": {"id": 17.0}}', "device.id"),
        (b'{"id": 7, "device": {"organizationId": 7e0}}', "device.organizationId"),
        (b'{"id": 7, "device": {"parentDeviceId": 1.5e1}}', "device.parentDeviceId"),
    ],
)
def test_non_integer_or_out_of_range_integer_field_is_400_naming_it_and_kept(
    client: Any, state: Any, raw: bytes, field: str
) -> None:
    r = client.post(INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["field"] == field
    assert problem["detail"].startswith(f"{field}: ")
    assert stored_ids(state) == []
    kept = kept_rejections(state)
    assert len(kept) == 1
    assert bytes(kept[0].body) == raw
    assert kept[0].reason == problem["detail"]


def test_float_id_is_not_taken_for_a_duplicate_of_another_activity(client: Any, state: Any) -> None:
    # 9007199254740993.0 is the float 9007199254740992.0: it was acknowledged as a
    # redelivery of activity 9007199254740992 and never stored.
    assert deliver(client, {"id": 9007199254740992}) == {
        "id": 9007199254740992,
        "duplicate": False,
    }
    r = client.post(INGEST_PATH, content=b'{"id": 9007199254740993.0}', headers=WEBHOOK_HEADERS)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "id"
    # The integer itself is a new activity, stored exactly.
    assert deliver(client, {"id": 9007199254740993}) == {
        "id": 9007199254740993,
        "duplicate": False,
    }
    assert stored_ids(state) == [9007199254740992, 9007199254740993]
    assert len(kept_rejections(state)) == 1


@pytest.mark.parametrize("activity_id", [0, 9223372036854775807])
def test_integer_ids_at_the_bounds_of_the_column_are_stored(
    client: Any, state: Any, activity_id: int
) -> None:
    assert deliver(client, minimal_activity(activity_id)) == {
        "id": activity_id,
        "duplicate": False,
    }
    assert stored_ids(state) == [activity_id]


def test_number_fields_still_take_fractions_and_exponents(client: Any, state: Any) -> None:
    raw = json.dumps(condition_activity(103, activity_time=1.5)).encode()
    raw = raw.replace(b'"activityTime": 1.5', b'"activityTime": 1.764300000123e9')
    assert b"1.764300000123e9" in raw
    r = client.post(INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS)
    assert r.status_code == 200, r.text
    assert stored_ids(state) == [103]
    with state.db.connect() as conn:
        row = store.get_activity(conn, 103)
    assert row is not None and row.activity_time == pytest.approx(1764300000.123)


# --- 3. A tampered cursor is a 400 -------------------------------------------------------


def forged_cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# Each paged path and the width of the signed column its cursor's id is compared with.
CURSOR_COLUMN_BITS = {
    "/activities": 64,  # activities.id
    "/alerts": 64,  # alerts.last_activity_id
    "/deliveries": 32,  # deliveries.id
    "/rejected": 32,  # rejected_deliveries.id
    "/devices": 32,
    "/organizations": 32,
    "/locations": 32,
}
CURSOR_PATHS = list(CURSOR_COLUMN_BITS)

BAD_CURSORS = {
    "2^63": forged_cursor("v1:9223372036854775808"),
    "-2^63-1": forged_cursor("v1:-9223372036854775809"),
    "20-digits-negative": forged_cursor("v1:-99999999999999999999"),
    "huge": forged_cursor("v1:" + "9" * 300),
    "underscores": forged_cursor("v1:1_000"),
    "spaces": forged_cursor("v1: 5 "),
    "arabic-indic-digits": forged_cursor("v1:\u0663"),
    "empty-id": forged_cursor("v1:"),
    "other-version": forged_cursor("v2:5"),
    "garbage": "garbage!",
    "not-utf8": base64.urlsafe_b64encode(b"v1:\xff").decode(),
    "non-ascii": "\u00e9t\u00e9",
}


@pytest.mark.parametrize("path", CURSOR_PATHS)
@pytest.mark.parametrize("cursor", list(BAD_CURSORS.values()), ids=list(BAD_CURSORS))
def test_tampered_cursor_is_400_naming_cursor(client: Any, path: str, cursor: str) -> None:
    r = client.get(path, params={"cursor": cursor}, headers=API_HEADERS)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"].startswith("cursor: ")


@pytest.mark.parametrize("path", CURSOR_PATHS)
def test_cursor_just_outside_the_column_range_is_400(client: Any, path: str) -> None:
    bits = CURSOR_COLUMN_BITS[path]
    for last_id in (-(2 ** (bits - 1)) - 1, 2 ** (bits - 1)):
        r = client.get(path, params={"cursor": encode_cursor(last_id)}, headers=API_HEADERS)
        assert r.status_code == 400, (last_id, r.text)
        assert r.json()["detail"].startswith("cursor: ")


@pytest.mark.parametrize("path", CURSOR_PATHS)
def test_cursors_within_the_column_range_are_accepted(client: Any, path: str) -> None:
    bits = CURSOR_COLUMN_BITS[path]
    for last_id in (-(2 ** (bits - 1)), 0, 2 ** (bits - 1) - 1):
        r = client.get(path, params={"cursor": encode_cursor(last_id)}, headers=API_HEADERS)
        assert r.status_code == 200, (last_id, r.text)


def test_cursor_pages_still_work(client: Any) -> None:
    for i in range(1, 6):
        deliver(client, minimal_activity(i))
    seen: list[int] = []
    url = "/activities?limit=2"
    while True:
        page = client.get(url, headers=API_HEADERS).json()
        seen += [item["id"] for item in page["items"]]
        if page["nextCursor"] is None:
            break
        url = f"/activities?limit=2&cursor={page['nextCursor']}"
    assert seen == [5, 4, 3, 2, 1]


# --- 4. A token is a webhook token or a read token, never both ---------------------------

SHARED = "shared_token_0123456789abcdef"


@pytest.mark.parametrize(
    ("webhook", "api"),
    [
        (SHARED, SHARED),
        (f"{WEBHOOK_TOKEN},{SHARED}", f"{SHARED},{API_TOKEN}"),
        (f" {SHARED} ", SHARED),
    ],
)
def test_a_token_both_webhook_and_read_token_is_refused(webhook: str, api: str) -> None:
    env = {"NINJAHOOK_WEBHOOK_TOKENS": webhook, "NINJAHOOK_API_TOKENS": api}
    with pytest.raises(ConfigError) as caught:
        load_config(environ=env)
    message = str(caught.value)
    assert "NINJAHOOK_WEBHOOK_TOKENS" in message and "NINJAHOOK_API_TOKENS" in message
    assert SHARED not in message


def test_shared_token_from_overrides_is_refused() -> None:
    with pytest.raises(ConfigError, match="NINJAHOOK_API_TOKENS"):
        load_config({"webhook_tokens": (SHARED,), "api_tokens": (SHARED,)}, environ={})


def test_distinct_tokens_are_accepted() -> None:
    config = load_config(
        environ={"NINJAHOOK_WEBHOOK_TOKENS": WEBHOOK_TOKEN, "NINJAHOOK_API_TOKENS": API_TOKEN}
    )
    assert config.webhook_tokens == (WEBHOOK_TOKEN,)
    assert config.api_tokens == (API_TOKEN,)


def test_create_app_refuses_a_shared_token(make_app: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        make_app(webhook_tokens=SHARED, api_tokens=SHARED)
    assert "NINJAHOOK_WEBHOOK_TOKENS" in str(caught.value)
    assert SHARED not in str(caught.value)


def test_serve_refuses_a_shared_token_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never_serve(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("serve started with a token shared by both roles")

    monkeypatch.setattr("uvicorn.run", never_serve)
    result = run_cli(
        ["serve", "--no-migrate"],
        env={
            "NINJAHOOK_INSTANCE_PATH": str(tmp_path / "instance"),
            "NINJAHOOK_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "NINJAHOOK_WEBHOOK_TOKENS": SHARED,
            "NINJAHOOK_API_TOKENS": SHARED,
        },
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: configuration: NINJAHOOK_WEBHOOK_TOKENS and ")
    assert "NINJAHOOK_API_TOKENS" in lines[0]
    assert SHARED not in result.output
    assert "Traceback" not in result.output
    # Refused before anything was generated or opened.
    assert not (tmp_path / "instance" / "webhook-token").exists()


def test_generated_tokens_are_distinct(tmp_path: Path) -> None:
    # With no tokens configured, ``serve`` generates both into the instance folder; each is
    # 256 random bits, so the two roles never share one.
    from app.cli.server import ensure_tokens
    from app.tokens import instance_token

    instance = tmp_path / "generated"
    config = load_config({"instance_path": str(instance)}, environ={})
    ensure_tokens(config)
    webhook, api = instance_token(instance, "webhook"), instance_token(instance, "api")
    assert webhook and api and webhook != api
