"""Retention takes skipped and suppressed outbox rows with their activity (issue 14's
new terminal statuses): the worker never sends them again, so nothing keeps them."""

from __future__ import annotations

import time
from typing import Any

from app.retention import service as retention
from tests.support import minimal_activity
from tests.test_retention import DAY, ingest, outbox_row, outbox_uids, stored_ids


def test_skipped_and_suppressed_rows_go_with_their_activity(state: Any) -> None:
    now = time.time()
    old = now - 100 * DAY
    for n in (1, 2, 3):
        ingest(state, minimal_activity(n, activityTime=old + n), received_at=old + n)
    skipped = outbox_row(state, 1, "skipped", changed=old)
    suppressed = outbox_row(state, 2, "suppressed", changed=old)
    pending = outbox_row(state, 3, "pending", changed=old)
    orphan_skipped = outbox_row(state, 99, "skipped", changed=old, route="o1")
    orphan_suppressed = outbox_row(state, 99, "suppressed", changed=old, route="o2")

    result = retention.prune_database(state.db, retention_days=7, now=now)

    assert stored_ids(state) == {3}  # the pending delivery keeps its activity
    assert outbox_uids(state) == {pending}
    assert result.deliveries == 4
    assert not {skipped, suppressed, orphan_skipped, orphan_suppressed} & outbox_uids(state)
