"""The settings of the incident and SIEM kinds (pagerduty, opsgenie, splunk_hec,
syslog) and their validation in the routes file; app.notifications.vendors sends.

Their credentials (routing key, API key, HEC token) come from ``*_env`` or ``*_file``
like every secret; each URL may be overridden (``url:``) to reach a proxy or a test
server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import yaml

if TYPE_CHECKING:
    from app.notifications.routes import Secret, _Reader

VENDOR_KINDS = ("pagerduty", "opsgenie", "splunk_hec", "syslog")
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
OPSGENIE_REGIONS = {"us": "https://api.opsgenie.com", "eu": "https://api.eu.opsgenie.com"}
SYSLOG_TRANSPORTS = {"udp": 514, "tcp": 514, "tls": 6514}
SYSLOG_FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{n}": 16 + n for n in range(8)},
}  # fmt: skip


@dataclass(frozen=True)
class VendorOptions:
    """The settings of a pagerduty, opsgenie, splunk_hec or syslog destination."""

    # PagerDuty's Events API URL, Opsgenie's API base, the HEC URL, or the syslog
    # receiver as tcp://, udp:// or tls://host:port.
    url: str
    # The routing key, the GenieKey, the HEC token (syslog has none).
    credential: Secret | None = None
    # opsgenie: tags on every alert.
    tags: tuple[str, ...] = ()
    # splunk_hec: the event metadata and the most events one request carries.
    source: str | None = None
    sourcetype: str = "ninjaone:activity"
    index: str | None = None
    batch_size: int = 100
    # syslog: facility number, APP-NAME, SD-ID, and a CA bundle for tls://.
    facility: int = 16
    app_name: str = "ninjahook"
    sd_id: str = "ninjahook@32473"
    ca_file: str | None = None


def syslog_address(url: str) -> tuple[str, str, int]:
    """(transport, host, port) of a ``udp://``, ``tcp://`` or ``tls://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in SYSLOG_TRANSPORTS or not parts.hostname:
        raise ValueError("expected udp://, tcp:// or tls://host[:port]")
    return parts.scheme, parts.hostname, parts.port or SYSLOG_TRANSPORTS[parts.scheme]


Items = dict[str, tuple[yaml.Node, yaml.Node]]

# The secret each kind needs: the stem of its ``<stem>_env`` / ``<stem>_file`` keys.
CREDENTIAL = {"pagerduty": "routing_key", "opsgenie": "api_key", "splunk_hec": "token"}
EXTRA_KEYS = {
    "pagerduty": {"url"},
    "opsgenie": {"url", "region", "tags"},
    "splunk_hec": {"url", "source", "sourcetype", "index", "batch_size"},
    "syslog": {"url", "facility", "app_name", "sd_id", "ca_file"},
}
_SD_NAME = r"^[\x21-\x7e]{1,32}$"


def vendor_options(
    reader: _Reader, name: str, node: yaml.Node, items: Items
) -> tuple[VendorOptions, float | None]:
    """The options and timeout of a destination of a vendor kind, validated as the
    routes file's other kinds are."""

    where = f"destinations.{name}"
    kind = reader.text(items["kind"][1], f"{where}.kind")
    stem = CREDENTIAL.get(kind)
    allowed = {"kind", "timeout"} | EXTRA_KEYS[kind]
    if stem is not None:
        allowed |= {f"{stem}_env", f"{stem}_file"}
        if stem in items:
            raise reader.error(
                items[stem][0],
                f"{where}.{stem}",
                f"secrets are not written in the routes file: use {stem}_env "
                f"(an environment variable) or {stem}_file (a file)",
            )
    reader.only(items, allowed, where)
    timeout = reader.number(items["timeout"][1], f"{where}.timeout") if "timeout" in items else None
    credential = reader.secret(items, stem, where) if stem is not None else None
    if stem is not None and credential is None:
        raise reader.error(node, where, f"missing {stem}_env or {stem}_file")

    def text(key: str) -> str | None:
        return reader.text(items[key][1], f"{where}.{key}") if key in items else None

    def http_url(default: str | None) -> str:
        url = text("url") or default
        if url is None:
            raise reader.error(node, where, "missing 'url'")
        if not url.startswith(("http://", "https://")):
            raise reader.error(
                items["url"][1], f"{where}.url", "expected an http:// or https:// URL"
            )
        return url

    if kind == "pagerduty":
        vendor = VendorOptions(url=http_url(PAGERDUTY_URL), credential=credential)
    elif kind == "opsgenie":
        region = (text("region") or "us").lower()
        if region not in OPSGENIE_REGIONS:
            raise reader.error(items["region"][1], f"{where}.region", "expected us or eu")
        if "url" in items and "region" in items:
            raise reader.error(items["url"][0], where, "give url or region, not both")
        tags = (
            tuple(str(value) for _n, value in reader.items(items["tags"][1], f"{where}.tags"))
            if "tags" in items
            else ()
        )
        vendor = VendorOptions(
            url=http_url(OPSGENIE_REGIONS[region]), credential=credential, tags=tags
        )
    elif kind == "splunk_hec":
        batch_size = 100
        if "batch_size" in items:
            value = reader.scalar(items["batch_size"][1], f"{where}.batch_size")
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 10000:
                raise reader.error(
                    items["batch_size"][1], f"{where}.batch_size", "expected 1 to 10000"
                )
            batch_size = value
        vendor = VendorOptions(
            url=http_url(None),
            credential=credential,
            source=text("source"),
            sourcetype=text("sourcetype") or "ninjaone:activity",
            index=text("index"),
            batch_size=batch_size,
        )
    else:
        url = text("url")
        if url is None:
            raise reader.error(node, where, "missing 'url' (udp://, tcp:// or tls://host:port)")
        try:
            syslog_address(url)
        except ValueError as exc:
            raise reader.error(items["url"][1], f"{where}.url", str(exc)) from None
        facility = (text("facility") or "local0").lower()
        if facility not in SYSLOG_FACILITIES:
            raise reader.error(
                items["facility"][1],
                f"{where}.facility",
                f"unknown facility {facility!r} (one of {', '.join(SYSLOG_FACILITIES)})",
            )
        sd_id = text("sd_id") or "ninjahook@32473"
        app_name = text("app_name") or "ninjahook"
        for key, value, pattern in (
            ("sd_id", sd_id, _SD_NAME),
            ("app_name", app_name, r"^[\x21-\x7e]{1,48}$"),
        ):
            if not re.match(pattern, value) or (key == "sd_id" and re.search(r'[= \]"]', value)):
                raise reader.error(
                    items[key][1], f"{where}.{key}", "not valid in an RFC 5424 header"
                )
        ca_file = text("ca_file")
        if ca_file is not None and not url.startswith("tls://"):
            raise reader.error(items["ca_file"][0], f"{where}.ca_file", "only for tls:// URLs")
        vendor = VendorOptions(
            url=url,
            facility=SYSLOG_FACILITIES[facility],
            app_name=app_name,
            sd_id=sd_id,
            ca_file=str(reader.base / ca_file) if ca_file else None,
        )
    return vendor, timeout
