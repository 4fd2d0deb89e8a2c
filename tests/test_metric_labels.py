"""A metric label value a sender chooses never stops the counting.

activityType is a label of ``ninjahook_activities_received``: a value webhook.yaml does
not list collapses into ``other`` when it is long, unusual or one too many, and an entry
the database refuses is dropped alone instead of holding back every later flush.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import service as metrics
from app.metrics.service import OTHER_LABEL, CounterBuffer, LabelBound
from app.storage.metrics import counters
from tests.support import (
    API_HEADERS,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    body,
    deliver,
    minimal_activity,
)


def received(client: Any) -> dict[tuple[str, str], float]:
    """activities_received by (activityType, outcome), from /metrics."""
    r = client.get("/metrics", headers=API_HEADERS)
    assert r.status_code == 200, r.text
    return {
        (s.labels["activityType"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
        if s.name == "ninjahook_activities_received_total"
    }


@pytest.mark.parametrize("length", [465, 600, 5000])
def test_a_long_activity_type_does_not_freeze_the_counters(client: Any, length: int) -> None:
    deliver(client, minimal_activity(1, activityType="X" * length))
    for activity_id in range(2, 202):
        deliver(client, minimal_activity(activity_id))
    counts = received(client)
    assert counts[("SYSTEM", "new")] == 200
    assert counts[(OTHER_LABEL, "new")] == 1
    assert all(len(activity_type) <= 64 for activity_type, _ in counts)
    # And it goes on counting.
    deliver(client, minimal_activity(500))
    assert received(client)[("SYSTEM", "new")] == 201


def test_unusual_unknown_activity_types_count_as_other(client: Any) -> None:
    deliver(client, minimal_activity(1, activityType="has space"))
    deliver(client, minimal_activity(2, activityType="nul\u0000"))
    deliver(client, minimal_activity(3, activityType="\u00e9t\u00e9"))
    deliver(client, minimal_activity(4, activityType="NEW_TYPE_2027"))
    r = client.post(
        INGEST_PATH,
        content=body(minimal_activity(5, activityType="Y" * 1000, deviceId="nope")),
        headers=WEBHOOK_HEADERS,
    )
    assert r.status_code == 400
    counts = received(client)
    assert counts[(OTHER_LABEL, "new")] == 3
    assert counts[("NEW_TYPE_2027", "new")] == 1
    assert counts[("", "rejected")] == 1  # a rejected body has no activityType


def test_unknown_label_values_are_bounded_per_process() -> None:
    bound = LabelBound(limit=3)
    assert [bound.label(f"T{i}") for i in range(5)] == ["T0", "T1", "T2", OTHER_LABEL, OTHER_LABEL]
    assert bound.label("T1") == "T1"  # one seen before keeps its label
    assert bound.label("CONDITION") == "CONDITION"  # listed in webhook.yaml: always itself
    assert bound.label(None) == "" and bound.label("") == ""


def test_an_entry_the_database_refuses_is_dropped_alone(
    state: Any, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = CounterBuffer(state.db, delay=3600)
    # A counter name over metric_counters.name's String(100): PostgreSQL refuses it
    # (SQLite stores it); either way the entries beside it are stored.
    poison = "n" * 150
    buffer.add(poison, {})
    buffer.add(metrics.RECEIVED, {"activityType": "SYSTEM", "outcome": "new"}, 2)
    buffer.add(metrics.BACKFILL_RUNS, {"outcome": "ok"})
    with caplog.at_level(logging.ERROR, logger="app.metrics.service"):
        buffer.flush()
    buffer.add(metrics.RECEIVED, {"activityType": "SYSTEM", "outcome": "new"}, 3)
    buffer.flush()
    with state.db.connect() as conn:
        stored = {(name, labels): value for name, labels, value in counters(conn)}
    assert stored[(metrics.RECEIVED, '{"activityType":"SYSTEM","outcome":"new"}')] == 5
    assert stored[(metrics.BACKFILL_RUNS, '{"outcome":"ok"}')] == 1
    if state.db.is_sqlite:
        assert stored[(poison, "{}")] == 1
    else:
        assert (poison, "{}") not in stored
        assert "metrics: dropped 1 from counter " + poison in caplog.text
    assert buffer._pending == {}


def test_labels_too_long_for_their_column_are_stored_as_other(state: Any) -> None:
    buffer = CounterBuffer(state.db, delay=3600)
    buffer.add("custom", {"what": "w" * 600})
    buffer.flush()
    with state.db.connect() as conn:
        stored = {(name, labels): value for name, labels, value in counters(conn)}
    assert stored[("custom", '{"what":"other"}')] == 1
