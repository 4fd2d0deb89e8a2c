"""/metrics: counts by outcome, latency, spec drift, open alerts, backfill runs, access."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import service as metrics
from tests.support import (
    API_HEADERS,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    WEBHOOK_TOKEN,
    body,
    condition_activity,
    deliver,
    minimal_activity,
    start_gunicorn,
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics", headers=API_HEADERS)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def received(activity_type: str, outcome: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (
        "ninjahook_activities_received_total",
        (("activityType", activity_type), ("outcome", outcome)),
    )


def test_every_outcome_is_counted_with_latency_drift_and_open_alerts(client: Any) -> None:
    deliver(client, condition_activity(1, severity="CRITICAL"))
    deliver(client, condition_activity(2, severity="CRITICAL", series_uid="other"))
    deliver(client, condition_activity(1, severity="CRITICAL"))  # redelivery
    deliver(client, minimal_activity(3, statusCode="BRAND_NEW_CODE"))
    assert client.post(INGEST_PATH, content=b"{}", headers=WEBHOOK_HEADERS).status_code == 400
    bad = {"Authorization": "Bearer wrong-token-wrong-token", "Content-Type": "application/json"}
    assert (
        client.post(INGEST_PATH, content=body(minimal_activity(4)), headers=bad).status_code == 401
    )

    found = scrape(client)
    assert found[received("CONDITION", "new")] == 2
    assert found[received("CONDITION", "duplicate")] == 1
    assert found[received("SYSTEM", "new")] == 1
    assert found[received("", "rejected")] == 1
    assert found[received("", "unauthorized")] == 1
    assert found[("ninjahook_ingest_latency_seconds_count", ())] == 6
    assert found[("ninjahook_ingest_latency_seconds_bucket", (("le", "+Inf"),))] == 6
    assert 0 < found[("ninjahook_ingest_latency_seconds_sum", ())] < 60
    drift = ("ninjahook_spec_drift_total", (("field", "statusCode"), ("value", "BRAND_NEW_CODE")))
    assert found[drift] == 1
    assert found[("ninjahook_open_alerts", (("severity", "CRITICAL"),))] == 2
    assert found[("ninjahook_open_alerts", (("severity", "MINOR"),))] == 0
    assert found[("ninjahook_delivery_queue_depth", ())] == 0  # no routes configured

    first = condition_activity(1)["seriesUid"]
    deliver(
        client, condition_activity(5, status="RESET", series_uid=first, activity_time=1764300999)
    )
    assert scrape(client)[("ninjahook_open_alerts", (("severity", "CRITICAL"),))] == 1


def test_backfill_runs_are_counted(client: Any, state: Any) -> None:
    metrics.record_backfill_run("ok", state)
    metrics.record_backfill_run("ok", state)
    metrics.record_backfill_run("failed", state)
    found = scrape(client)
    assert found[("ninjahook_backfill_runs_total", (("outcome", "ok"),))] == 2
    assert found[("ninjahook_backfill_runs_total", (("outcome", "failed"),))] == 1


def test_pending_counts_are_stored_when_the_app_shuts_down(make_app: Any) -> None:
    from app.storage.metrics import counters

    app = make_app()
    state = app.app.extensions["ninjahook"]
    metrics.buffer_for(state).delay = 3600  # only the shutdown can store them
    with app.test_client() as client:
        deliver(client, minimal_activity(1))
        with state.db.connect() as conn:
            assert counters(conn) == []
    with state.db.connect() as conn:
        stored = {(name, labels): value for name, labels, value in counters(conn)}
    assert stored[("activities_received", '{"activityType":"SYSTEM","outcome":"new"}')] == 1


def test_metrics_need_a_read_token_unless_public(make_app: Any) -> None:
    with make_app().test_client() as client:
        assert client.get("/metrics").status_code == 401
        webhook = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
        assert client.get("/metrics", headers=webhook).status_code == 401
        assert client.get("/metrics", headers=API_HEADERS).status_code == 200
    with make_app(metrics_public="1").test_client() as client:
        assert client.get("/metrics").status_code == 200


def test_counts_add_up_across_gunicorn_workers(database_url: str, tmp_path: Path) -> None:
    server = start_gunicorn(
        database_url, tmp_path / "instance", workers=2, log_path=tmp_path / "gunicorn.log"
    )
    try:
        # New connections spread deliveries over both workers.
        for n in range(40):
            r = httpx.post(
                server.url + INGEST_PATH, content=body(minimal_activity(n)), headers=WEBHOOK_HEADERS
            )
            assert r.status_code == 200
        key = received("SYSTEM", "new")
        deadline = time.monotonic() + 15
        counts: list[float] = []
        while time.monotonic() < deadline:
            # Each scrape may land on either worker; both must report the total.
            r = httpx.get(server.url + "/metrics", headers=API_HEADERS)
            counts.append(samples(r.text).get(key, 0))
            if counts[-4:] == [40.0] * 4:
                break
            time.sleep(0.3)
        assert counts[-4:] == [40.0] * 4, counts
    finally:
        server.stop()
