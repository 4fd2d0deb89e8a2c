"""Reminders (a route's ``repeat``) respect a silence that began after the alert was
notified, as Alertmanager's repeat notifications do: recorded as suppressed, and the
reminders go on once the silence is over."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from app.silences.service import add_silence, expire_silence
from app.storage import notifications as store
from tests.support import DestinationServer, settle_deliveries
from tests.test_wait_repeat import HOUR, events, ingest, outbox, remind, routes_yaml


def test_a_silenced_alert_gets_no_reminders_until_the_silence_ends(
    make_state: Callable[..., Any],
) -> None:
    destination = DestinationServer().start()
    try:
        state = make_state(routes_yaml(destination.url, repeat="1h"))
        ingest(state, 531, "TRIGGERED", time.time() - 1)
        settle_deliveries(state)
        notify = outbox(state)["notify"]
        silence = add_silence(
            state, matchers={"device": [42]}, comment="patching", created_by="al", duration="4h"
        )
        assert remind(state, notify.delivered_at + HOUR + 1) == 0  # held back, not sent
        settle_deliveries(state)
        assert events(destination) == ["notify"]
        with state.db.connect() as conn:
            rows = store.list_notifications(conn, store.NotificationFilter(), limit=50)
        (held,) = [r for r in rows if r.event.startswith("reminder")]
        assert held.status == "suppressed" and f"silence {silence['id']}" in held.suppressed_reason

        expire_silence(state, silence["id"], "al")
        assert remind(state, notify.delivered_at + 2 * HOUR + 2) == 1
        settle_deliveries(state)
        assert events(destination) == ["notify", "reminder"]
        assert destination.payloads()[1]["text"].startswith("Still open (reminder 2): ")
    finally:
        destination.stop()
