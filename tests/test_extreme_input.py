"""Extreme content a sender may put in a valid body: stored on both backends, shown
everywhere, never a 500 and never a 503.

* numbers: a finite activityTime that is no time (1e308, negative, after year 9999) is
  stored and shown raw; a literal that overflows a double (1e400) is a 400 naming the
  field; every answer is strict JSON;
* text: NUL, lone surrogates, a seriesUid over 300 characters and kilobytes in indexed
  columns are stored (raw body exact, derived text made storable) instead of a 503;
* a database error about content is never a 503.
"""

from __future__ import annotations

import json
import random
import re
import string
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from app.ingest.errors import database_unavailable
from app.ingest.service import ingest_activity
from app.ingest.text import INDEXED_TEXT_LIMIT, SERIES_UID_LIMIT
from app.storage.tables import activities, rejected_deliveries, task_leases
from tests.support import (
    API_HEADERS,
    API_TOKEN,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    body,
    condition_activity,
    deliver,
    minimal_activity,
)


def strict_json(text: str) -> Any:
    """``text`` parsed as JSON proper: Infinity and NaN are not JSON."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in an answer: not JSON")

    return json.loads(text, parse_constant=refuse)


def get_json(client: Any, path: str) -> Any:
    r = client.get(path, headers=API_HEADERS)
    assert r.status_code == 200, r.text
    return strict_json(r.text)


def pages_render(client: Any, *paths: str) -> list[str]:
    """The dashboard pages at ``paths``, each answered 200 to a logged-in user."""
    # Log in through the login form, as a browser does (its form token included).
    match = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text)
    csrf = {"csrf": match.group(1)} if match else {}
    r = client.post("/login", data={"token": API_TOKEN, **csrf}, follow_redirects=False)
    assert r.status_code == 303
    texts = []
    for path in ("/", "/ui/live", *paths):
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        texts.append(page.text)
    return texts


def rejected_count(state: Any) -> int:
    with state.db.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(rejected_deliveries)).scalar_one()
        )


def stored_row(state: Any, activity_id: int) -> Any:
    with state.db.connect() as conn:
        return conn.execute(sa.select(activities).where(activities.c.id == activity_id)).one()


# --- numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    [1e308, -1e308, -5.0, 253402300800.0, 1e15],
    ids=["1e308", "-1e308", "negative", "year-10000", "1e15"],
)
def test_a_time_that_is_no_time_is_stored_and_shown_raw(client: Any, when: float) -> None:
    activity = condition_activity(1, series_uid="far", activity_time=when)
    deliver(client, activity)

    record = get_json(client, "/activities/1")
    assert record["activityTime"] == when
    assert record["payload"]["activityTime"] == when
    [alert] = get_json(client, "/alerts?state=open")["items"]
    assert (alert["key"], alert["openedAt"], alert["lastActivityTime"]) == ("far", when, when)
    detail = get_json(client, "/alerts/far")
    assert detail["openedAt"] == when

    index, live, activity_page, alert_page = pages_render(
        client, "/ui/activities/1", "/ui/alerts/far"
    )
    assert 'data-key="far"' in index
    assert repr(when) in live  # shown raw (in the opened-at title)
    assert repr(when) in activity_page
    assert repr(when) in alert_page
    # The alert's RESET closes it as usual.
    deliver(client, condition_activity(2, series_uid="far", status="RESET", activity_time=when))
    assert get_json(client, "/alerts/far")["state"] == "closed"


@pytest.mark.parametrize(
    ("payload", "literal", "field"),
    [
        (condition_activity(1, activityTime="#"), b"1e400", "activityTime"),
        (condition_activity(1, activityTime="#"), b"-1e400", "activityTime"),
        (condition_activity(1, data={"values": [1, "#"]}), b"1e999", "data.values.1"),
        (minimal_activity(1, deviceId="#"), b"9" * 400, "deviceId"),
        (minimal_activity(1, extra={"n": "#"}), b"-" + b"9" * 400, "extra.n"),
        (minimal_activity(1, extra={"n": "#"}), b"1" + b"0" * 400 + b".5", "extra.n"),
    ],
    ids=["1e400", "minus-1e400", "nested-1e999", "400-digits", "minus-400-digits", "long-float"],
)
def test_a_number_beyond_a_double_is_400_naming_the_field(
    client: Any, state: Any, payload: dict[str, Any], literal: bytes, field: str
) -> None:
    raw = body(payload).replace(b'"#"', literal)
    assert literal in raw
    r = client.post(INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS)
    assert r.status_code == 400, r.text
    problem = strict_json(r.text)
    assert problem["field"] == field
    assert problem["detail"].startswith(f"{field}: ")
    assert "not a finite number" in problem["detail"]
    assert rejected_count(state) == 1
    assert get_json(client, "/activities")["items"] == []
    pages_render(client)


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b'{"id": 1, "a\\u0000": 1, "a\\u0000": 2}', "duplicate key 'a\\x00'"),
        (b'{"id": 1, "b\\ud800": 1, "b\\ud800": 2}', "duplicate key 'b\\ud800'"),
        (b'{"id": 1, "data": {"c\\u0000\\udfff": 1e400}}', "is not a finite number"),
    ],
    ids=["nul-key", "surrogate-key", "overflow-under-odd-key"],
)
def test_a_rejection_naming_an_odd_field_is_kept(
    client: Any, state: Any, raw: bytes, detail: str
) -> None:
    r = client.post(INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS)
    assert r.status_code == 400, r.text
    assert detail in strict_json(r.text)["detail"]
    assert rejected_count(state) == 1
    [kept] = get_json(client, "/rejected")["items"]
    assert kept["body"] == raw.decode()
    assert kept["field"].isprintable()  # NUL and lone surrogates made U+FFFD
    pages_render(client)


def test_infinities_stored_before_they_were_refused_are_answered_as_json(
    client: Any, state: Any
) -> None:
    # What an older version stored: 1e400 parsed to inf, in the columns and the raw body.
    payload = condition_activity(1, series_uid="inf", activity_time=float("inf"))
    raw = body(condition_activity(1, series_uid="inf", activity_time=1.5)).replace(
        b'"activityTime":1.5', b'"activityTime":1e400'
    )
    assert b"1e400" in raw
    ingest_activity(state, raw, payload)

    record = get_json(client, "/activities/1")
    assert record["activityTime"] is None
    assert record["payload"]["activityTime"] == "1e400"
    [alert] = get_json(client, "/alerts?state=open")["items"]
    assert alert["openedAt"] is None and alert["lastActivityTime"] is None
    assert get_json(client, "/alerts/inf")["key"] == "inf"
    get_json(client, "/activities")
    assert client.get("/activities/1/raw", headers=API_HEADERS).content == raw
    pages_render(client, "/ui/activities/1", "/ui/alerts/inf")


# --- text -----------------------------------------------------------------------------


def _random_text(length: int, seed: int) -> str:
    # Random letters: a long value that does not compress below an index row's limit.
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(length))


@pytest.mark.parametrize(
    "extra",
    [
        {"message": "disk\u0000full", "subject": "\u0000", "sourceName": "a\u0000b"},
        {"statusCode": "TRIGGERED", "severity": "MAJOR\u0000", "sourceConfigUid": "\u0000uid"},
        {"message": "\ud800 lone", "sourceName": "x\udfff", "subject": "\udbff\u0000"},
        {"seriesUid": "series\u0000one"},
        {"seriesUid": "series\ud800two"},
    ],
    ids=["nul", "nul-codes", "lone-surrogates", "nul-series", "surrogate-series"],
)
def test_nul_and_lone_surrogates_are_stored_with_the_raw_body_exact(
    client: Any, state: Any, extra: dict[str, Any]
) -> None:
    payload = condition_activity(1, **extra)
    payload["device"]["displayName"] = "SRV\u0000\ud800"
    payload["device"]["references"]["organization"]["name"] = "Org\u0000"
    payload["data"]["message"]["params"]["k\u0000"] = "v\ud800"
    raw = json.dumps(payload, separators=(",", ":")).encode()  # \\u escapes, valid JSON
    r = client.post(INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS)
    assert r.status_code == 200, r.text

    assert client.get("/activities/1/raw", headers=API_HEADERS).content == raw
    record = get_json(client, "/activities/1")
    for name, value in extra.items():
        expected = value.replace("\u0000", "\ufffd")
        expected = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in expected)
        assert record[name] == expected
    assert record["deviceName"] == "SRV\ufffd\ufffd"
    assert record["organizationName"] == "Org\ufffd"
    # The payload in the answer is the body as sent (JSON escapes the surrogate).
    assert record["payload"]["message"] == payload["message"]
    [alert] = get_json(client, "/alerts")["items"]
    assert alert["state"] == "open"
    assert "\u0000" not in alert["key"]
    get_json(client, f"/alerts/{quote(alert['key'], safe='')}")
    _, _, activity_page = pages_render(client, "/ui/activities/1")
    # The pretty-printed payload shows a lone surrogate as the escape it was sent as.
    if "\ud800 lone" in json.dumps(extra, ensure_ascii=False):
        assert "\\ud800 lone" in activity_page
    with state.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(activities)).scalar_one() == 1


def test_a_long_series_uid_is_a_bounded_alert_key_that_stays_distinct(client: Any) -> None:
    common = _random_text(SERIES_UID_LIMIT, 1)
    first, second = common + "-first", common + "-second"
    deliver(client, condition_activity(1, series_uid=first))
    deliver(client, condition_activity(2, series_uid=second))
    deliver(client, condition_activity(3, series_uid="z" * 5000, severity="CRITICAL"))
    alerts = get_json(client, "/alerts?state=open")["items"]
    keys = {a["key"] for a in alerts}
    assert len(keys) == 3
    assert all(len(key) <= SERIES_UID_LIMIT for key in keys)
    # A RESET with the same long seriesUid closes its own alert only.
    deliver(client, condition_activity(4, series_uid=first, status="RESET"))
    open_now = get_json(client, "/alerts?state=open")["items"]
    assert len(open_now) == 2
    closed_key = (keys - {a["key"] for a in open_now}).pop()
    assert closed_key.startswith(common[:200])
    assert get_json(client, "/activities/1")["seriesUid"] == closed_key
    detail = get_json(client, f"/alerts/{quote(closed_key, safe='')}")
    assert [h["id"] for h in detail["history"]] == [1, 4]
    pages_render(client)


@pytest.mark.parametrize(
    "field", ["sourceName", "activityType", "seriesUid", "message", "subject", "statusCode"]
)
def test_kilobytes_in_a_text_column_are_stored(client: Any, state: Any, field: str) -> None:
    value = _random_text(12_000, 2)
    payload = condition_activity(1) | {field: value}
    if field == "activityType":
        payload["activityType"] = "CONDITION" + value  # still a condition
    deliver(client, payload)
    # Multi-byte text near the limit: 500 four-byte characters are 2000 bytes.
    wide = "\U0001f600" * (INDEXED_TEXT_LIMIT + 10)
    deliver(client, condition_activity(2) | {field: wide})

    record = get_json(client, "/activities/1")
    limit = {"sourceName": INDEXED_TEXT_LIMIT, "activityType": INDEXED_TEXT_LIMIT}.get(
        field, SERIES_UID_LIMIT if field == "seriesUid" else None
    )
    if limit is None:
        assert record[field] == payload[field]  # not indexed: kept whole
    else:
        assert len(record[field]) == limit
        assert record[field].startswith(payload[field][: limit - 17])
    assert record["payload"][field] == payload[field]
    assert stored_row(state, 1).raw == body(payload)
    get_json(client, "/activities")
    get_json(client, "/alerts")
    pages_render(client, "/ui/activities/1", "/ui/activities/2")
    assert client.get("/readyz").status_code == 200


def test_the_activity_type_filter_finds_a_bounded_activity_type(client: Any) -> None:
    long_type = "CONDITION_" + _random_text(3000, 3)
    deliver(client, condition_activity(1) | {"activityType": long_type})
    stored = get_json(client, "/activities/1")["activityType"]
    assert len(stored) == INDEXED_TEXT_LIMIT
    page = get_json(client, f"/activities?activityType={quote(stored, safe='')}")
    assert [a["id"] for a in page["items"]] == [1]


# --- database errors --------------------------------------------------------------------


def test_a_database_error_about_content_is_kept_and_answered_400_never_503(
    client: Any, state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rules above keep content from reaching the database unstorable; this stands in
    # for one they missed: a statement the database refuses (a NOT NULL constraint).
    run = state.pipeline.run

    def refuse_activity_7(conn: Any, payload: dict[str, Any], stored: Any) -> None:
        if payload["id"] == 7:
            conn.execute(sa.insert(task_leases).values(name=None, holder="x", expires_at=0))
        run(conn, payload, stored)

    monkeypatch.setattr(state.pipeline, "run", refuse_activity_7)
    r = client.post(INGEST_PATH, content=body(minimal_activity(7)), headers=WEBHOOK_HEADERS)
    assert r.status_code == 400, r.text
    assert "refused this delivery's content (IntegrityError)" in strict_json(r.text)["detail"]
    assert rejected_count(state) == 1
    [kept] = get_json(client, "/rejected")["items"]
    assert kept["body"] == body(minimal_activity(7)).decode()
    assert "IntegrityError" in kept["reason"]
    deliver(client, minimal_activity(8))
    assert client.get("/readyz").status_code == 200
    assert client.get("/activities/7", headers=API_HEADERS).status_code == 404


def test_only_an_unavailable_database_counts_as_unavailable(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            with pytest.raises(sa.exc.SQLAlchemyError) as constraint:
                conn.execute(sa.insert(task_leases).values(name=None, holder="x", expires_at=0))
            assert not database_unavailable(constraint.value)
            conn.rollback()
            if engine.dialect.name == "postgresql":
                with pytest.raises(sa.exc.SQLAlchemyError) as data:
                    conn.execute(sa.text("SELECT CAST('x' AS INTEGER)"))
                assert not database_unavailable(data.value)
                conn.rollback()
                with pytest.raises(sa.exc.SQLAlchemyError) as nul:
                    conn.execute(sa.text("SELECT CAST(:v AS TEXT)"), {"v": "a\u0000b"})
                assert not database_unavailable(nul.value)
                conn.rollback()
                big = _random_text(12_000, 4)
                conn.execute(sa.text("CREATE TEMP TABLE big (v TEXT)"))
                conn.execute(sa.text("CREATE INDEX ON big (v)"))
                with pytest.raises(sa.exc.SQLAlchemyError) as limit:
                    conn.execute(sa.text("INSERT INTO big VALUES (:v)"), {"v": big})
                assert not database_unavailable(limit.value)
    finally:
        engine.dispose()
    if database_url.startswith("postgresql"):
        gone = sa.create_engine(
            "postgresql+psycopg://postgres@127.0.0.1:1/postgres",
            connect_args={"connect_timeout": 2},
        )
        with pytest.raises(sa.exc.SQLAlchemyError) as refused:
            gone.connect()
        assert database_unavailable(refused.value)
        gone.dispose()


def test_a_search_for_a_nul_finds_what_was_stored_for_it(client: Any) -> None:
    # Stored text has U+FFFD where a NUL was sent; a NUL in `q` means the same, on the
    # read API and on the dashboard (a NUL reached SQLite's FTS5 query as is: 500).
    payload = minimal_activity(1, message="disk\u0000full on SRV")
    raw = json.dumps(payload).encode()
    assert client.post(INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS).status_code == 200
    found = get_json(client, "/activities?q=" + quote("k\u0000fu"))
    assert [item["id"] for item in found["items"]] == [1]
    assert get_json(client, "/activities?q=" + quote("\u0000zz"))["items"] == []
    pages_render(client, "/ui/live?q=" + quote("k\u0000fu"), "/?q=" + quote("\u0000"))
