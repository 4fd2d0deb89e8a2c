"""The Suppressor reads silences at most once a second per process (issue 14's speed
target: routing stays cheap at ingest) and still honours every silence: one added in
this process at once, one added by another worker or host within the second."""

from __future__ import annotations

import json
from typing import Any

from app.notifications.matching import describe
from app.notifications.routes import Match, Route
from app.silences.service import Suppressor, add_silence, expire_silence
from app.storage import silences as store
from tests.support import condition_activity

ROUTE = Route(name="r", match=Match(), destinations=("hook",), ignore_maintenance=True)


def suppressed(suppressor: Suppressor, state: Any, payload: dict[str, Any], now: float) -> bool:
    with state.db.connect() as conn:
        return suppressor(conn, describe(None, payload), ROUTE, now) is not None


def test_a_silence_added_by_another_worker_applies_within_the_ttl(state: Any) -> None:
    payload = condition_activity(1, device_id=7)
    suppressor = Suppressor()
    now = 1_900_000_000.0
    assert not suppressed(suppressor, state, payload, now)  # reads (none) and caches
    # Another worker stores a silence of device 7: this process is not told.
    with state.db.begin() as conn:
        store.insert_silence(
            conn,
            matchers=json.dumps({"device": [7]}),
            starts_at=now,
            ends_at=now + 3600,
            created_by="bob",
            comment="other worker",
            now=now,
        )
    # Inside the cached second the silence is not seen yet; after it, it is.
    assert not suppressed(suppressor, state, payload, now + 0.5)
    assert suppressed(suppressor, state, payload, now + Suppressor.SILENCES_TTL)


def test_a_silence_added_or_expired_here_applies_at_once(state: Any) -> None:
    import time

    payload = condition_activity(2, device_id=8)
    suppressor = Suppressor()
    now = time.time()
    assert not suppressed(suppressor, state, payload, now)
    silence = add_silence(
        state, matchers={"device": [8]}, comment="now", created_by="al", duration="1h"
    )
    assert suppressed(suppressor, state, payload, now + 0.01)
    expire_silence(state, silence["id"], "al")
    assert not suppressed(suppressor, state, payload, time.time())


def test_a_silence_that_ends_inside_the_cached_second_stops_at_its_end(state: Any) -> None:
    payload = condition_activity(3, device_id=9)
    now = 1_900_000_000.0
    with state.db.begin() as conn:
        store.insert_silence(
            conn,
            matchers=json.dumps({"device": [9]}),
            starts_at=now - 60,
            ends_at=now + 0.5,
            created_by="bob",
            comment="short",
            now=now,
        )
        store.insert_silence(
            conn,
            matchers=json.dumps({"device": [10]}),
            starts_at=now + 0.5,
            ends_at=now + 60,
            created_by="bob",
            comment="starts soon",
            now=now,
        )
    suppressor = Suppressor()
    assert suppressed(suppressor, state, payload, now)
    assert not suppressed(suppressor, state, payload, now + 0.6)
    later = condition_activity(4, device_id=10)
    assert not suppressed(suppressor, state, later, now + 0.1)
    assert suppressed(suppressor, state, later, now + 0.6)


def test_a_silence_after_the_notification_never_holds_back_its_resolved(
    make_app: Any, tmp_path: Any
) -> None:
    """Forward-only lifecycle (issue 14, item 1) beats a silence: the RESET of an alert
    that was notified before the silence began still resolves it at the destination."""
    from tests.support import FAST_DELIVERY, DestinationServer, deliver, settle_deliveries

    hook = DestinationServer().start()
    try:
        routes = tmp_path / "routes.yaml"
        routes.write_text(
            f"destinations:\n  hook: {{kind: webhook, url: '{hook.url}'}}\n"
            "routes:\n"
            "  - {name: alerts, match: {activityType: [CONDITION]}, destinations: [hook]}\n"
        )
        app = make_app(routes_file=str(routes), **FAST_DELIVERY)
        state = app.app.extensions["ninjahook"]
        series = "5e9b0c3c-1111-4222-8333-944445555777"
        with app.test_client() as client:
            deliver(client, condition_activity(1, series_uid=series, device_id=11))
            settle_deliveries(state)
            add_silence(
                state,
                matchers={"device": [11]},
                comment="after the page",
                created_by="al",
                duration="1h",
            )
            # A new firing during the silence is held back ...
            deliver(client, condition_activity(2, series_uid="another-" + series, device_id=11))
            # ... but the first alert's RESET is not.
            deliver(client, condition_activity(3, series_uid=series, device_id=11, status="RESET"))
            settle_deliveries(state)
        events = [(p["activity"]["id"], p["event"]) for p in hook.payloads()]
        assert events == [(1, "notify"), (3, "resolved")]
    finally:
        hook.stop()
