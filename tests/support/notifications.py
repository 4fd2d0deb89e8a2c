"""Notification deliveries: fast retry settings, a one-route file, running the worker dry."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

# Delivery settings that make retries and dead letters take well under a second.
FAST_DELIVERY = {
    "delivery_backoff": "0.05",
    "delivery_backoff_max": "0.2",
    "delivery_max_attempts": "3",
    "delivery_lease": "1",
    "delivery_timeout": "3",
    "delivery_poll_interval": "0.05",
}


def one_route_file(directory: Path, url: str) -> Path:
    """A routes file sending every activity to one webhook destination ``d`` at ``url``
    (route ``all``); returns its path."""
    path = directory / "one-route.yaml"
    path.write_text(
        f"destinations:\n  d: {{kind: webhook, url: '{url}'}}\n"
        "routes:\n  - {name: all, destinations: [d]}\n"
    )
    return path


def settle_deliveries(state: Any, timeout: float = 30) -> None:
    """Run a delivery worker until nothing is pending or in flight (retries included)."""
    from app.notifications.outbox import Worker
    from app.notifications.reads import notification_metrics

    worker = Worker(state)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            worker.run(drain=True)
            if notification_metrics(state).queue_depth == 0:
                return
            time.sleep(0.05)
        raise AssertionError("deliveries did not settle")
    finally:
        worker.close()
