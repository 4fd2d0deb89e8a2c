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


def condition_route_yaml(
    url: str,
    kind: str = "webhook",
    *,
    route: str = "pager",
    slack_env: str = "TEST_SLACK_URL",
    **options: Any,
) -> str:
    """A routes file with one route ``route`` for CONDITION activities to one destination
    ``d``: a webhook at ``url``, a Slack-shaped webhook whose URL is in ``slack_env``, or
    an e-mail to an SMTP server at ``url`` ("host:port"); ``options`` are the route's
    further keys, written as given (``wait="1s"``)."""
    if kind == "email":
        host, port = url.split(":")
        destination = (
            f"  d: {{kind: email, host: '{host}', port: {port}, tls: none,"
            " from: ninjahook@example.com, to: [noc@example.com]}\n"
        )
    elif kind == "slack":
        destination = f"  d: {{kind: slack, url_env: {slack_env}}}\n"
    else:
        destination = f"  d: {{kind: webhook, url: '{url}'}}\n"
    extra = "".join(f"    {key}: {value}\n" for key, value in options.items())
    return (
        "destinations:\n"
        + destination
        + f"routes:\n  - name: {route}\n    match: {{activityType: [CONDITION]}}\n"
        + "    destinations: [d]\n"
        + extra
    )


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
