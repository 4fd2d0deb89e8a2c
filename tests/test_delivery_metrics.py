"""/metrics for routed delivery: deliveries by destination and outcome, the queue depth
and the age of the oldest pending delivery, scraped as Prometheus would."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from app.notifications import reads as service
from app.storage.notifications import NotificationFilter
from app.storage.tables import deliveries
from tests.support import (
    API_HEADERS,
    FAST_DELIVERY,
    DestinationServer,
    deliver,
    free_port,
    minimal_activity,
    one_route_file,
    settle_deliveries,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def delivery_samples(client: Any) -> Samples:
    """The delivery families of a /metrics scrape, keyed by name and sorted labels."""
    r = client.get("/metrics", headers=API_HEADERS)
    assert r.status_code == 200, r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        if family.name.startswith(("ninjahook_deliveries", "ninjahook_delivery_"))
        for s in family.samples
    }


def by_status(status: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = (("destination", "d"), ("kind", "webhook"), ("status", status))
    return ("ninjahook_deliveries", labels)


DEPTH = ("ninjahook_delivery_queue_depth", ())
OLDEST = ("ninjahook_delivery_oldest_pending_age_seconds", ())


def test_metrics_follow_deliveries_from_pending_to_dead_to_delivered(
    make_app: Any, tmp_path: Any
) -> None:
    port = free_port()
    routes = one_route_file(tmp_path, f"http://127.0.0.1:{port}/hook")
    app = make_app(routes_file=str(routes), **FAST_DELIVERY)
    state = app.app.extensions["ninjahook"]
    with app.test_client() as client:
        deliver(client, minimal_activity(1))
        deliver(client, minimal_activity(2))
        # The first was enqueued two minutes ago, as if the destination had been slow.
        with state.db.begin() as conn:
            conn.execute(
                sa.update(deliveries)
                .where(deliveries.c.activity_id == 1)
                .values(created_at=time.time() - 120)
            )
        pending = delivery_samples(client)
        assert pending[by_status("pending")] == 2
        assert pending[DEPTH] == 2
        assert 120 <= pending[OLDEST] < 180

        settle_deliveries(state)  # nothing listens on the port: both end as dead letters
        dead = delivery_samples(client)
        assert dead[by_status("dead")] == 2
        assert by_status("pending") not in dead
        assert (dead[DEPTH], dead[OLDEST]) == (0, 0)

        destination = DestinationServer(port=port).start()
        try:
            assert service.retry_dead_letters(state.db, NotificationFilter()) == 2
            assert delivery_samples(client)[DEPTH] == 2
            settle_deliveries(state)
        finally:
            destination.stop()
        delivered = delivery_samples(client)
        assert delivered[by_status("delivered")] == 2
        assert by_status("dead") not in delivered
        assert (delivered[DEPTH], delivered[OLDEST]) == (0, 0)
        assert len(destination.ids()) == 2
