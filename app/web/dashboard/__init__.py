"""The server-rendered dashboard: Jinja2 templates and a stylesheet, no build step.

Pages are rendered from the same read functions the JSON API uses. The live part
(open alerts, recent activity, drift, rejected and dead-letter counts) is one
fragment, ``live.html``, that the page's small script re-fetches every few seconds.

The one form that changes state, "retry" on the dead-letters page, carries a token
derived from the session cookie (:func:`form_token`) and is refused from another
origin (:func:`form_allowed`), on top of the cookie's SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from app.activities import reads
from app.alerts import service as alerts
from app.config import Config
from app.ninjaone import client as ninjaone
from app.notifications import flapping as flapping_reads
from app.notifications import reads as delivery_service
from app.silences import operator
from app.state import AppState
from app.storage import activities as activity_store
from app.storage import entities as entity_store
from app.storage.alerts import SEVERITY_RANK, AlertFilter
from app.timeparse import is_time, raw_number
from app.web.dashboard.charts import chart_views
from app.web.dashboard.status import status_panel

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_TYPES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
POLL_SECONDS = 3
RECENT_ACTIVITIES = 30
# Open alerts are listed this many a page, worst severity first (the counts are exact).
OPEN_ALERTS_PAGE = 100
REJECTED_SHOWN = 5
DEAD_LETTERS_SHOWN = 50
# The alert page's "silence this condition on this device for …" buttons.
SILENCE_DURATIONS = ("1h", "4h", "1d")
_FORM_CONTEXT = b"ninjahook-dashboard-form-v1"
# The filter offers a list of organizations up to this many (a number field beyond).
ORGANIZATIONS_LISTED = 500
# NinjaOne's severities, worst first (the order of the open-alerts list).
SEVERITY_ORDER = SEVERITY_RANK
# A device's page in NinjaOne, under the region's base URL.
NINJAONE_DEVICE_PATH = "/#/deviceDashboard/{id}/overview"

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def age(since: float | None, now: float | None = None) -> str:
    """A short human age: ``45s``, ``12m``, ``3h 5m``, ``2d 4h``; empty for a value that
    is no time (:func:`app.timeparse.is_time`)."""
    if since is None or not is_time(since):
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
    """Epoch seconds as ``2026-01-31 12:00:00 UTC``; a value that is no time (negative,
    after year 9999, not finite) is shown as the number it is."""
    if ts is None:
        return ""
    if not is_time(ts):
        return raw_number(ts)
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def iso_time(ts: float | None) -> str:
    """Epoch seconds as UTC ISO 8601 (``2026-01-31T12:00:00Z``) for a ``<time datetime>``
    attribute; empty for a value that is no time."""
    if ts is None or not is_time(ts):
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def local_time(ts: float | None) -> Markup | str:
    """A ``<time class="local">`` element: :func:`when`'s UTC text, which dashboard.js
    replaces with the time in the viewer's time zone (the UTC text stays without script);
    a value that is no time is shown as the number it is."""
    iso = iso_time(ts)
    if not iso:
        return when(ts)
    return Markup('<time class="local" datetime="{}">{}</time>').format(iso, escape(when(ts)))


def severity_class(severity: str | None) -> str:
    """The CSS class that paints an alert or activity in its severity's colour."""
    return f"sev-{(severity or 'none').lower()}"


def activity_class(activity: dict[str, Any]) -> str:
    """An activity's CSS class: a RESET (any status that ends a condition) is painted as
    resolved, never in the severity colour of the condition it ends."""
    if activity.get("statusCode") in alerts.RESET_CODES:
        return "resolved"
    return severity_class(activity.get("severity"))


def ninjaone_device_base(config: Config) -> str | None:
    """NinjaOne's base URL for device links (NINJAONE_BASE_URL, else NINJAONE_REGION's
    host), or None when neither is set or usable: the dashboard then links nowhere."""
    try:
        return ninjaone.base_url(config)
    except ninjaone.NinjaOneNotConfigured:
        return None


def ninjaone_device_url(base: str | None, device_id: int | None) -> str | None:
    """The device's page in NinjaOne, or None without a base URL or a device."""
    if not base or device_id is None:
        return None
    return base + NINJAONE_DEVICE_PATH.format(id=int(device_id))


_env.filters["age"] = age
_env.filters["when"] = when
_env.filters["iso_time"] = iso_time
_env.filters["local_time"] = local_time
_env.filters["severity_class"] = severity_class
_env.filters["activity_class"] = activity_class
_env.globals["ninjaone_device_url"] = ninjaone_device_url
# Links to an alert use its ref: a key may hold "/" (see app.alerts.service.alert_ref).
_env.filters["alert_ref"] = alerts.alert_ref


@dataclass(frozen=True)
class Filters:
    """What the dashboard's filter form selects."""

    organization_id: int | None = None
    severity: str | None = None
    text: str | None = None
    page: int = 1

    def query(self, page: int | None = None) -> str:
        """The filters as a query string (without ``?``), for the live fragment's URL;
        with ``page``, that page of open alerts instead of this one."""
        from urllib.parse import urlencode

        shown = self.page if page is None else page
        pairs = {
            "organizationId": self.organization_id,
            "severity": self.severity,
            "q": self.text,
            "page": shown if shown > 1 else None,
        }
        return urlencode({k: v for k, v in pairs.items() if v not in (None, "")})


def _severity_counts(by_severity: dict[str | None, int]) -> list[tuple[str | None, int]]:
    """(severity, count) for the five NinjaOne severities, worst first, then any other
    value seen (None: no severity given); the numbers /metrics' ninjahook_open_alerts has."""
    counts = dict(by_severity)
    known = [(name, counts.pop(name, 0)) for name in SEVERITY_ORDER]
    return known + sorted(counts.items(), key=lambda item: str(item[0]))


def _live_context(state: AppState, filters: Filters) -> dict[str, Any]:
    page = max(1, filters.page)
    ranked = alerts.ranked_alerts(
        state,
        AlertFilter(
            state="open", organization_id=filters.organization_id, severity=filters.severity
        ),
        limit=OPEN_ALERTS_PAGE,
        offset=(page - 1) * OPEN_ALERTS_PAGE,
    )
    open_count = ranked["total"]
    pages = max(1, -(-open_count // OPEN_ALERTS_PAGE))
    activity_filter = activity_store.ActivityFilter(
        organization_id=filters.organization_id, severity=filters.severity, text=filters.text
    )
    recent = reads.activity_page(state, activity_filter, limit=RECENT_ACTIVITIES, before_id=None)
    drift = reads.spec_drift(state)
    rejected_totals = reads.rejected_totals(state)
    return {
        "open_alerts": ranked["items"],
        "flapping_keys": flapping_reads.flapping_keys(state, [a["key"] for a in ranked["items"]]),
        "open_count": open_count,
        "severity_counts": _severity_counts(ranked["bySeverity"]),
        "alerts_page": page,
        "alerts_pages": pages,
        "alerts_first": (page - 1) * OPEN_ALERTS_PAGE + 1,
        "page_query": filters.query,
        "ninjaone": ninjaone_device_base(state.config),
        "recent": recent["items"],
        "drift": drift,
        "drift_count": sum(d["count"] for d in drift),
        "rejected": reads.rejected_page(state, limit=REJECTED_SHOWN, before_id=None)["items"],
        "rejected_count": rejected_totals["rows"],
        "rejected_dropped": rejected_totals["dropped"],
        "rejected_max_rows": state.config.rejected_max_rows,
        "rejected_max_bytes": state.config.rejected_max_bytes,
        "dead_count": delivery_service.dead_letter_count(state),
        "now": time.time(),
    }


def pretty_json(raw: bytes) -> str:
    """``raw`` JSON indented by two spaces, keys in the order received and every number
    exactly as sent (activityTime carries up to nine decimals, more than a float keeps)."""
    return _pretty(json.loads(raw, parse_float=Decimal), 0)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _dumps(value: Any) -> str:
    # Non-ASCII text as itself, but a lone surrogate (valid JSON, not encodable as UTF-8)
    # as the escape it was sent as.
    text = json.dumps(value, ensure_ascii=False)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _pretty(value: Any, level: int) -> str:
    inner, outer = "  " * (level + 1), "  " * level
    if isinstance(value, dict) and value:
        items = [f"{inner}{_dumps(k)}: {_pretty(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + outer + "}"
    if isinstance(value, list) and value:
        items = [inner + _pretty(v, level + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + outer + "]"
    if isinstance(value, Decimal):
        return str(value)
    return _dumps(value)


def render_login(error: str | None = None, *, csrf: str = "") -> str:
    """The login form; ``csrf`` is the :func:`form_token` of the pre-session cookie."""
    return _env.get_template("login.html").render(error=error, csrf=csrf)


def render_index(state: AppState, filters: Filters, *, csrf: str = "") -> str:
    """The whole dashboard page with its live part rendered in place; ``csrf`` is the
    logout form's token (:func:`form_token` of the session cookie), as on every page."""
    with state.db.connect() as conn:
        cached = entity_store.list_organizations(conn, limit=ORGANIZATIONS_LISTED)
    organizations = sorted(((o.id, o.name or f"#{o.id}") for o in cached), key=lambda o: o[1])
    return _env.get_template("index.html").render(
        logout_csrf=csrf,
        filters=filters,
        organizations=organizations,
        live_query=filters.query(),
        poll_seconds=POLL_SECONDS,
        status=status_panel(state),
        charts=chart_views(state),
        noisiest=flapping_reads.noisiest(state),
        **_live_context(state, filters),
    )


def render_live(state: AppState, filters: Filters) -> str:
    """The live fragment the page polls."""
    return _env.get_template("live.html").render(**_live_context(state, filters))


def render_activity(state: AppState, activity_id: int, *, csrf: str = "") -> str | None:
    """One activity's page with its payload pretty-printed, or None when not stored."""
    record = reads.activity_detail(state, activity_id)
    raw = reads.activity_raw(state, activity_id)
    if record is None or raw is None:
        return None
    record.pop("payload")
    payload = pretty_json(raw)
    routed = delivery_service.activity_notifications(state, activity_id) or []
    return _env.get_template("activity.html").render(
        activity=record,
        payload=payload,
        deliveries=routed,
        ninjaone=ninjaone_device_base(state.config),
        logout_csrf=csrf,
    )


def form_token(session: str) -> str:
    """The token the dashboard's state-changing forms carry: derived from the session
    cookie, which a page on another site can neither read nor compute from."""
    return hmac.new(session.encode(), _FORM_CONTEXT, hashlib.sha256).hexdigest()


def form_allowed(
    session: str, token: str, *, fetch_site: str | None, origin: str | None, host: str | None
) -> bool:
    """Whether a form post comes from this dashboard: ``token`` is the session's
    :func:`form_token`, and the browser says the post comes from this origin.

    Browsers send ``Sec-Fetch-Site`` (``fetch_site``), which must be ``same-origin``.
    Without it, an ``Origin`` header must name this server's ``host`` (the Host header;
    the scheme is not compared, so a TLS-terminating proxy in front does not matter).
    Our pages send no referrer, so a browser may send ``Origin: null``; then, as with
    no header at all, the token alone decides.
    """
    if fetch_site is not None:
        same_origin = fetch_site == "same-origin"
    elif origin is not None and origin != "null":
        same_origin = bool(host) and urlsplit(origin).netloc.lower() == (host or "").lower()
    else:
        same_origin = True  # nothing to go by: the token decides
    token_ok = hmac.compare_digest(token.encode(), form_token(session).encode())
    return same_origin and token_ok


def render_dead_letters(
    state: AppState,
    *,
    session: str,
    before: int | None = None,
    retried: int | None = None,
    operator_session: bool = False,
) -> str:
    """The dead letters, newest first, :data:`DEAD_LETTERS_SHOWN` a page; with a retry
    button each for an operator's session."""
    page = delivery_service.dead_letters(state, limit=DEAD_LETTERS_SHOWN, before_seq=before)
    items = page["items"]
    older = items[-1]["seq"] if page["nextCursor"] else None
    return _env.get_template("dead_letters.html").render(
        items=items,
        total=delivery_service.dead_letter_count(state),
        older=older,
        first_page=before is None,
        retried=retried,
        operator_session=operator_session,
        form_token=form_token(session),
        logout_csrf=form_token(session) if session else "",
    )


def render_alert(
    state: AppState,
    key: str,
    *,
    csrf: str = "",
    operator_session: bool = False,
    notice: str | None = None,
) -> str | None:
    """One alert's page with its history, the silences that match it and what operators
    did to it, or None when there is no such alert. An operator's session also gets the
    forms that act on it (silence, expire, acknowledge, reset), with ``csrf``."""
    detail = operator.alert_with_actions(state, key)
    if detail is None:
        return None
    history = detail.pop("history")
    return _env.get_template("alert.html").render(
        alert=detail,
        flapping=flapping_reads.alert_flapping(state, str(detail["key"])),
        history=history,
        now=time.time(),
        ninjaone=ninjaone_device_base(state.config),
        logout_csrf=csrf,
        operator_session=operator_session,
        form_token=csrf,
        notice=notice,
        silence_durations=SILENCE_DURATIONS,
    )


def render_not_found(what: str, *, csrf: str = "") -> str:
    """A 404 page (with the logout form when ``csrf`` is given)."""
    return _env.get_template("not_found.html").render(what=what, logout_csrf=csrf)


def render_forbidden(*, csrf: str = "", reason: str | None = None) -> str:
    """A 403 page for a form posted from elsewhere or with a stale token, or for what
    ``reason`` says (with the logout form when ``csrf`` is given)."""
    return _env.get_template("forbidden.html").render(logout_csrf=csrf, reason=reason)


def static_file(name: str) -> tuple[bytes, str]:
    """A file from static/ and its content type (names are limited by webhook.yaml)."""
    return (STATIC / name).read_bytes(), STATIC_TYPES[name]
