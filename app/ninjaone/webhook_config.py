"""The body of ``PUT /v2/webhook`` (NinjaOne's WebhookConfiguration), built from CLI input.

Every check names the option and the cause, so ``configure`` can print one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.spec.generated import KNOWN_VALUES

INGEST_PATH = "/webhooks/ninjarmm/activity"
EXPANDABLE = ("device", "organization", "location")
DEFAULT_ACTIVITIES: dict[str, list[str]] = {"CONDITION": ["*"], "SYSTEM": ["*"]}
MASK = "********"


class WebhookConfigError(ValueError):
    """Invalid ``configure`` input; the message names the option."""


@dataclass(frozen=True)
class WebhookConfiguration:
    """A validated configuration and the warnings found while building it."""

    body: dict[str, Any]
    warnings: tuple[str, ...]

    def masked(self) -> dict[str, Any]:
        """The body with every header value hidden (they carry the webhook token)."""
        headers = [{"name": h["name"], "value": _mask(h["value"])} for h in self.body["headers"]]
        return {**self.body, "headers": headers}


def _mask(value: str) -> str:
    scheme, _, secret = value.partition(" ")
    return f"{scheme} {MASK}" if secret else MASK


def receiver_url(url: str, *, allow_http: bool) -> str:
    """The delivery URL: ``url`` as given, or with the ingest path when it has no path."""
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise WebhookConfigError(
            f"--url: expected the receiver's public URL such as https://ninjahook.example.com, "
            f"got {url!r}"
        )
    if parts.scheme == "http" and not allow_http:
        raise WebhookConfigError(
            "--url: NinjaOne would send the webhook token in clear text over http; "
            "use https, or pass --allow-http for a local test"
        )
    path = parts.path if parts.path not in {"", "/"} else INGEST_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def parse_expand(value: str) -> list[str]:
    """``device,organization`` -> ``["device", "organization"]``; empty means none."""
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in EXPANDABLE]
    if unknown:
        raise WebhookConfigError(
            f"--expand: unknown value(s) {', '.join(unknown)}; choose from {', '.join(EXPANDABLE)}"
        )
    return list(dict.fromkeys(items))


def parse_activities(values: Iterable[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``TYPE=STATUS[,STATUS...]`` options as NinjaOne's activity filter, plus warnings.

    ``TYPE`` alone means every status (``["*"]``). A type or status code that
    webhook.yaml does not know is a warning, not an error: NinjaOne adds them.
    """
    filters: dict[str, list[str]] = {}
    warnings: list[str] = []
    known_types = KNOWN_VALUES.get(("activityType",), frozenset())
    known_statuses = KNOWN_VALUES.get(("statusCode",), frozenset())
    for value in values:
        kind, sep, statuses_text = value.partition("=")
        kind = kind.strip().upper()
        if not kind:
            raise WebhookConfigError(f"--activity: expected TYPE=STATUS[,STATUS...], got {value!r}")
        statuses = [s.strip().upper() for s in statuses_text.split(",") if s.strip()]
        if sep and not statuses:
            raise WebhookConfigError(f"--activity {value!r}: no status after '='; use {kind}=*")
        statuses = statuses or ["*"]
        if kind not in known_types:
            warnings.append(
                f"--activity: {kind} is not a known activity type; NinjaOne may ignore it"
            )
        for status in statuses:
            if status != "*" and status not in known_statuses:
                warnings.append(f"--activity: {status} is not a known status code for {kind}")
        merged = filters.setdefault(kind, [])
        merged.extend(s for s in statuses if s not in merged)
    for kind, statuses in filters.items():
        if "*" in statuses:
            filters[kind] = ["*"]
    return filters, warnings


def build(
    *,
    url: str,
    token: str,
    expand: str,
    activities: Iterable[str] = (),
    allow_http: bool = False,
) -> WebhookConfiguration:
    """The ``PUT /v2/webhook`` body: where to deliver, what, expanded how, with our token."""
    filters, warnings = parse_activities(activities)
    body = {
        "url": receiver_url(url, allow_http=allow_http),
        "expand": parse_expand(expand),
        "activities": filters or {k: list(v) for k, v in DEFAULT_ACTIVITIES.items()},
        "headers": [{"name": "Authorization", "value": f"Bearer {token}"}],
    }
    return WebhookConfiguration(body, tuple(warnings))
