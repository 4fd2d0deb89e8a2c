"""The server-rendered dashboard: Jinja2 templates and a stylesheet, no build step.

Pages are rendered from the same read functions the JSON API uses. The live part
(open alerts, recent activity, drift and rejected counts) is one fragment,
``live.html``, that the page's small script re-fetches every few seconds.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from app import alerts, reads
from app.state import AppState
from app.storage import activities as activity_store
from app.storage import entities as entity_store
from app.storage.alerts import AlertFilter

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_TYPES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
POLL_SECONDS = 3
RECENT_ACTIVITIES = 30
OPEN_ALERTS_SHOWN = 200
REJECTED_SHOWN = 5
# The filter offers a list of organizations up to this many (a number field beyond).
ORGANIZATIONS_LISTED = 500
SEVERITY_ORDER = {"CRITICAL": 0, "MAJOR": 1, "MODERATE": 2, "MINOR": 3, "NONE": 4}

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def age(since: float | None, now: float | None = None) -> str:
    """A short human age: ``45s``, ``12m``, ``3h 5m``, ``2d 4h``."""
    if since is None:
        return ""
    seconds = max(0, int((time.time() if now is None else now) - since))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def when(ts: float | None) -> str:
    """Epoch seconds as ``2026-01-31 12:00:00 UTC``."""
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


_env.filters["age"] = age
_env.filters["when"] = when
_env.filters["severity_class"] = lambda s: f"sev-{(s or 'none').lower()}"


@dataclass(frozen=True)
class Filters:
    """What the dashboard's filter form selects."""

    organization_id: int | None = None
    severity: str | None = None
    text: str | None = None

    def query(self) -> str:
        """The filters as a query string (without ``?``), for the live fragment's URL."""
        from urllib.parse import urlencode

        pairs = {"organizationId": self.organization_id, "severity": self.severity, "q": self.text}
        return urlencode({k: v for k, v in pairs.items() if v not in (None, "")})


def _live_context(state: AppState, filters: Filters) -> dict[str, Any]:
    open_alerts = alerts.alert_page(
        state,
        AlertFilter(
            state="open", organization_id=filters.organization_id, severity=filters.severity
        ),
        limit=OPEN_ALERTS_SHOWN,
        before_id=None,
    )["items"]
    groups: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
    ordered = sorted(
        open_alerts,
        key=lambda a: (
            (a["organizationName"] or "").lower(),
            a["organizationId"] or 0,
            SEVERITY_ORDER.get(a["severity"] or "", 9),
            a["openedAt"] or 0,
        ),
    )
    for alert in ordered:
        name = alert["organizationName"] or (
            f"Organization {alert['organizationId']}"
            if alert["organizationId"] is not None
            else "No organization"
        )
        groups.setdefault(name, []).append(alert)
    activity_filter = activity_store.ActivityFilter(
        organization_id=filters.organization_id, severity=filters.severity, text=filters.text
    )
    recent = reads.activity_page(state, activity_filter, limit=RECENT_ACTIVITIES, before_id=None)
    drift = reads.spec_drift(state)
    with state.db.connect() as conn:
        rejected_count = activity_store.count_rejected(conn)
    return {
        "groups": groups,
        "open_count": len(open_alerts),
        "recent": recent["items"],
        "drift": drift,
        "drift_count": sum(d["count"] for d in drift),
        "rejected": reads.rejected_page(state, limit=REJECTED_SHOWN, before_id=None)["items"],
        "rejected_count": rejected_count,
        "now": time.time(),
    }


def pretty_json(raw: bytes) -> str:
    """``raw`` JSON indented by two spaces, keys in the order received and every number
    exactly as sent (activityTime carries up to nine decimals, more than a float keeps)."""
    return _pretty(json.loads(raw, parse_float=Decimal), 0)


def _pretty(value: Any, level: int) -> str:
    inner, outer = "  " * (level + 1), "  " * level
    if isinstance(value, dict) and value:
        items = [
            f"{inner}{json.dumps(k, ensure_ascii=False)}: {_pretty(v, level + 1)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + outer + "}"
    if isinstance(value, list) and value:
        items = [inner + _pretty(v, level + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + outer + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def render_login(error: str | None = None) -> str:
    """The login form."""
    return _env.get_template("login.html").render(error=error)


def render_index(state: AppState, filters: Filters) -> str:
    """The whole dashboard page with its live part rendered in place."""
    with state.db.connect() as conn:
        cached = entity_store.list_organizations(conn, limit=ORGANIZATIONS_LISTED)
    organizations = sorted(((o.id, o.name or f"#{o.id}") for o in cached), key=lambda o: o[1])
    return _env.get_template("index.html").render(
        filters=filters,
        organizations=organizations,
        live_query=filters.query(),
        poll_seconds=POLL_SECONDS,
        **_live_context(state, filters),
    )


def render_live(state: AppState, filters: Filters) -> str:
    """The live fragment the page polls."""
    return _env.get_template("live.html").render(**_live_context(state, filters))


def render_activity(state: AppState, activity_id: int) -> str | None:
    """One activity's page with its payload pretty-printed, or None when not stored."""
    record = reads.activity_detail(state, activity_id)
    raw = reads.activity_raw(state, activity_id)
    if record is None or raw is None:
        return None
    record.pop("payload")
    payload = pretty_json(raw)
    return _env.get_template("activity.html").render(activity=record, payload=payload)


def render_alert(state: AppState, key: str) -> str | None:
    """One alert's page with its history, or None when there is no such alert."""
    detail = alerts.alert_detail(state, key)
    if detail is None:
        return None
    history = detail.pop("history")
    return _env.get_template("alert.html").render(alert=detail, history=history, now=time.time())


def render_not_found(what: str) -> str:
    """A 404 page."""
    return _env.get_template("not_found.html").render(what=what)


def static_file(name: str) -> tuple[bytes, str]:
    """A file from static/ and its content type (names are limited by webhook.yaml)."""
    return (STATIC / name).read_bytes(), STATIC_TYPES[name]
