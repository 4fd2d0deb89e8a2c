"""The routes file: loading and validation, with every error naming its line.

The file has two sections::

    destinations:
      noc-slack:
        kind: slack
        url_env: SLACK_NOC_WEBHOOK_URL
    routes:
      - name: servers-critical
        match:
          activityType: [CONDITION]
          minSeverity: MAJOR
          nodeClass: [WINDOWS_SERVER, LINUX_SERVER]
        destinations: [noc-slack]

Secrets (signing keys, Slack/Teams/apprise URLs, SMTP passwords) are never written
in the file: a destination names an environment variable (``*_env``) or a file
(``*_file``) holding each one. They are resolved when the file is loaded, so a
missing variable is an error at start-up, not at the first alert.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from app.notifications.templates import compile_template
from app.notifications.vendor_config import VENDOR_KINDS, VendorOptions, vendor_options
from app.spec.generated import KNOWN_VALUES

SEVERITIES = ("NONE", "MINOR", "MODERATE", "MAJOR", "CRITICAL")
KINDS = ("webhook", "slack", "teams", "email", "apprise", *VENDOR_KINDS)
# Kinds whose URL carries the credential itself (Slack, Teams and apprise URLs do).
SECRET_URL_KINDS = frozenset({"slack", "teams", "apprise"})
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# A route's max_lateness when it sets none (README, "Routing"): no limit. Lateness alone
# does not make an activity stale (an alert still open after a backfill is news); an alert
# already over when it arrives is handled by notify_resolved_late.
DEFAULT_MAX_LATENESS: float | None = None
GROUP_BY_KEYS = ("organization", "location", "device")
# A grouping route's group_wait when it sets none (Alertmanager's default).
DEFAULT_GROUP_WAIT = 30.0
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Match keys whose values are NinjaOne enums that webhook.yaml lists (x-extensible-enum):
# a value it does not list is most likely a typo, and the route would never fire.
ENUM_KEYS = {
    "activityType": ("activityType",),
    "statusCode": ("statusCode",),
    "nodeClass": ("device", "nodeClass"),
}


class RoutesError(ValueError):
    """The routes file cannot be used; the message names the file, the line and the cause."""


@dataclass(frozen=True)
class Secret:
    """A value read from the environment or a file; never printed."""

    value: str
    source: str

    def __repr__(self) -> str:
        return f"Secret(from {self.source})"


@dataclass(frozen=True)
class Destination:
    """Where a route's messages go, with the settings of its kind."""

    name: str
    kind: str
    url: str | None = None
    url_secret: Secret | None = None
    signing_secret: Secret | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_tls: str = "starttls"
    smtp_username: str | None = None
    smtp_password: Secret | None = None
    mail_from: str | None = None
    mail_to: tuple[str, ...] = ()
    # pagerduty, opsgenie, splunk_hec, syslog (app.notifications.vendor_config).
    vendor: VendorOptions | None = None

    def target_url(self) -> str | None:
        """The URL to send to (resolved from its secret when it is one)."""
        return self.url_secret.value if self.url_secret else self.url


@dataclass(frozen=True)
class Match:
    """What an activity must look like for a route to fire. Empty means any."""

    activity_types: frozenset[str] | None = None
    status_codes: frozenset[str] | None = None
    min_severity: str | None = None
    organizations: tuple[int | str, ...] = ()
    devices: tuple[int | str, ...] = ()
    node_classes: frozenset[str] | None = None
    source_name: re.Pattern[str] | None = None
    message: re.Pattern[str] | None = None


@dataclass(frozen=True)
class Flapping:
    """When a condition (a device and a sourceConfigUid, across its alerts) flaps: it
    fired ``threshold`` times within ``window`` seconds. It is then notified once, saying
    so, and stays quiet until it has not fired for ``calm`` seconds."""

    threshold: int
    window: float = 3600.0
    calm: float = 1800.0


@dataclass(frozen=True)
class Route:
    """A named rule: a match, destinations, and how to word the message."""

    name: str
    match: Match
    destinations: tuple[str, ...]
    once_per_alert: bool = True
    send_resolved: bool = True
    # Seconds an activity may arrive after its activityTime and still be notified
    # (None: no limit).
    max_lateness: float | None = DEFAULT_MAX_LATENESS
    # An alert already resolved before its notification went out (backfill, redelivery,
    # a retried dead letter): one summary message instead of nothing.
    notify_resolved_late: bool = False
    # Notify even while the device is in maintenance (NinjaOne's maintenance mode).
    ignore_maintenance: bool = False
    # Seconds a notification waits before it is sent; the alert must still be open then
    # (a RESET inside the wait sends nothing at all). None: send at once.
    wait: float | None = None
    # Seconds between reminders while a notified alert stays open. None: no reminders.
    repeat: float | None = None
    flapping: Flapping | None = None
    # What groups the route's notifications (organization, location, device): those of
    # one group pending together, within group_wait seconds, go out as one message.
    group_by: tuple[str, ...] = ()
    group_wait: float = DEFAULT_GROUP_WAIT
    title: jinja2.Template | None = None
    template: jinja2.Template | None = None
    line: int = 0


@dataclass(frozen=True)
class RoutesConfig:
    """A validated routes file."""

    path: Path | None
    routes: tuple[Route, ...]
    destinations: Mapping[str, Destination]
    # Doubts that are not errors ("file:line: where: cause"): match values that
    # webhook.yaml's enums do not list. `routes check --strict` fails on them.
    warnings: tuple[str, ...] = ()

    def route(self, name: str) -> Route | None:
        """The route called ``name``, or None."""
        return next((r for r in self.routes if r.name == name), None)

    @functools.cached_property
    def matches_on_entities(self) -> bool:
        """True when a route matches (or groups) on an organization, device or nodeClass,
        which an unexpanded activity only has through the entity cache."""
        return any(
            r.match.organizations
            or r.match.devices
            or r.match.node_classes is not None
            or r.group_by
            for r in self.routes
        )


EMPTY = RoutesConfig(path=None, routes=(), destinations={})


class _Reader:
    """Turns a composed YAML node tree into values, raising errors with file and line."""

    def __init__(
        self, path: str, environ: Mapping[str, str], base: Path, *, secrets: bool = True
    ) -> None:
        self.path = path
        self.environ = environ
        self.base = base
        # False: secrets are named, not read (a placeholder stands in for each).
        self.secrets = secrets
        self.warnings: list[str] = []

    def warn(self, node: yaml.Node, where: str, cause: str) -> None:
        self.warnings.append(f"{self.path}:{node.start_mark.line + 1}: {where}: {cause}")

    def error(self, node: yaml.Node | None, where: str, cause: str) -> RoutesError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return RoutesError(f"{self.path}{line}: {where}: {cause}")

    def mapping(self, node: yaml.Node, where: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, where, "expected a mapping (key: value)")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise self.error(key, where, "keys must be plain names")
            if key.value in out:
                raise self.error(key, where, f"{key.value!r} appears twice")
            out[key.value] = (key, value)
        return out

    def only(
        self, items: dict[str, tuple[yaml.Node, yaml.Node]], allowed: set[str], where: str
    ) -> None:
        for name, (key, _value) in items.items():
            if name not in allowed:
                raise self.error(
                    key,
                    where,
                    f"unknown key {name!r} (expected one of {', '.join(sorted(allowed))})",
                )

    def scalar(self, node: yaml.Node, where: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, where, "expected a single value")
        return yaml.safe_load(yaml.serialize(node))

    def text(self, node: yaml.Node, where: str) -> str:
        value = self.scalar(node, where)
        if not isinstance(value, str) or not value.strip():
            raise self.error(node, where, "expected a non-empty string")
        return value

    def boolean(self, node: yaml.Node, where: str) -> bool:
        value = self.scalar(node, where)
        if not isinstance(value, bool):
            raise self.error(node, where, f"expected true or false, got {value!r}")
        return value

    def number(self, node: yaml.Node, where: str) -> float:
        value = self.scalar(node, where)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.error(node, where, f"expected a positive number, got {value!r}")
        return float(value)

    def items(self, node: yaml.Node, where: str) -> list[tuple[yaml.Node, Any]]:
        """A list of scalars; a single scalar counts as a list of one."""
        nodes = node.value if isinstance(node, yaml.SequenceNode) else [node]
        return [(n, self.scalar(n, where)) for n in nodes]

    def secret(
        self, items: dict[str, tuple[yaml.Node, yaml.Node]], stem: str, where: str
    ) -> Secret | None:
        """``<stem>_env`` or ``<stem>_file``; refuses ``<stem>`` written in clear."""
        env = items.get(f"{stem}_env")
        path = items.get(f"{stem}_file")
        if env and path:
            raise self.error(path[0], where, f"give {stem}_env or {stem}_file, not both")
        if env:
            name = self.text(env[1], f"{where}.{stem}_env")
            if not self.secrets:
                return Secret(f"<{stem} from ${name}>", f"${name}")
            if name not in self.environ or not self.environ[name]:
                raise self.error(
                    env[1], f"{where}.{stem}_env", f"environment variable {name} is not set"
                )
            return Secret(self.environ[name], f"${name}")
        if path:
            file = Path(self.text(path[1], f"{where}.{stem}_file"))
            if not file.is_absolute():
                file = self.base / file
            if not self.secrets:
                return Secret(f"<{stem} from {file}>", str(file))
            try:
                value = file.read_text().strip()
            except OSError as exc:
                raise self.error(
                    path[1], f"{where}.{stem}_file", f"cannot read {file}: {exc.strerror}"
                ) from None
            if not value:
                raise self.error(path[1], f"{where}.{stem}_file", f"{file} is empty")
            return Secret(value, str(file))
        return None


def load_routes(
    path: str | Path, environ: Mapping[str, str] | None = None, *, secrets: bool = True
) -> RoutesConfig:
    """Read and validate a routes file.

    :param secrets: False to name secrets without reading them (``routes test``, which
        sends nothing): a placeholder stands in for each.
    :raises RoutesError: naming the file, the line and the cause of the first problem.
    """
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise RoutesError(f"{file}: cannot read the routes file: {exc.strerror}") from None
    return parse_routes(text, str(file), environ, base=file.resolve().parent, secrets=secrets)


def parse_routes(
    text: str,
    name: str = "<routes>",
    environ: Mapping[str, str] | None = None,
    base: Path | None = None,
    *,
    secrets: bool = True,
) -> RoutesConfig:
    """Validate routes given as YAML text (see :func:`load_routes`)."""
    reader = _Reader(
        name, os.environ if environ is None else environ, base or Path.cwd(), secrets=secrets
    )
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RoutesError(f"{name}{line}: not valid YAML: {problem}") from None
    if root is None:
        raise RoutesError(f"{name}: the routes file is empty")
    top = reader.mapping(root, "top level")
    reader.only(top, {"destinations", "routes"}, "top level")
    if "destinations" not in top:
        raise reader.error(root, "top level", "missing 'destinations'")
    if "routes" not in top:
        raise reader.error(root, "top level", "missing 'routes'")
    destinations: dict[str, Destination] = {}
    for dest_name, (key, node) in reader.mapping(top["destinations"][1], "destinations").items():
        if not NAME_PATTERN.match(dest_name):
            raise reader.error(key, "destinations", f"{dest_name!r} is not a valid name")
        destinations[dest_name] = _destination(reader, dest_name, node)
    routes_node = top["routes"][1]
    if not isinstance(routes_node, yaml.SequenceNode) or not routes_node.value:
        raise reader.error(routes_node, "routes", "expected a non-empty list of routes")
    routes: list[Route] = []
    for index, node in enumerate(routes_node.value):
        route = _route(reader, index, node, destinations)
        if any(r.name == route.name for r in routes):
            raise reader.error(node, f"routes[{index}].name", f"{route.name!r} is used twice")
        routes.append(route)
    return RoutesConfig(
        path=Path(name),
        routes=tuple(routes),
        destinations=destinations,
        warnings=tuple(reader.warnings),
    )


def _destination(reader: _Reader, name: str, node: yaml.Node) -> Destination:
    where = f"destinations.{name}"
    items = reader.mapping(node, where)
    if "kind" not in items:
        raise reader.error(node, where, f"missing 'kind' (one of {', '.join(KINDS)})")
    kind = reader.text(items["kind"][1], f"{where}.kind")
    if kind not in KINDS:
        raise reader.error(
            items["kind"][1], f"{where}.kind", f"unknown kind {kind!r} (one of {', '.join(KINDS)})"
        )
    if kind in VENDOR_KINDS:
        vendor, timeout = vendor_options(reader, name, node, items)
        return Destination(name=name, kind=kind, url=vendor.url, timeout=timeout, vendor=vendor)
    common = {"kind", "timeout"}
    url_keys = {"url", "url_env", "url_file"}
    allowed = {
        "webhook": common | url_keys | {"headers", "secret_env", "secret_file"},
        "slack": common | url_keys,
        "teams": common | url_keys,
        "apprise": common | url_keys,
        "email": common
        | {"host", "port", "tls", "username", "password_env", "password_file", "from", "to"},
    }[kind]
    for secret_key in ("secret", "password"):
        if secret_key in items:
            raise reader.error(
                items[secret_key][0],
                f"{where}.{secret_key}",
                f"secrets are not written in the routes file: use {secret_key}_env "
                f"(an environment variable) or {secret_key}_file (a file)",
            )
    if kind in SECRET_URL_KINDS and "url" in items:
        raise reader.error(
            items["url"][0],
            f"{where}.url",
            f"a {kind} URL is a credential: give it with url_env or url_file",
        )
    reader.only(items, allowed, where)
    timeout = reader.number(items["timeout"][1], f"{where}.timeout") if "timeout" in items else None
    if kind == "email":
        return _email_destination(reader, name, node, items, timeout)
    url_secret = reader.secret(items, "url", where)
    url = reader.text(items["url"][1], f"{where}.url") if "url" in items else None
    if url is not None and url_secret is not None:
        raise reader.error(items["url"][0], where, "give url or url_env/url_file, not both")
    if url is None and url_secret is None:
        raise reader.error(node, where, "missing 'url' (or url_env / url_file)")
    target = url if url is not None else url_secret.value if url_secret else ""
    unread = url_secret is not None and not reader.secrets  # a placeholder, not the URL
    if kind != "apprise" and not unread and not target.startswith(("http://", "https://")):
        at = items.get("url") or items.get("url_env") or items.get("url_file")
        raise reader.error(
            at[1] if at else node, f"{where}.url", "expected an http:// or https:// URL"
        )
    if kind == "apprise" and not unread:
        _check_apprise_url(reader, items, node, where, target)
    headers: dict[str, str] = {}
    if "headers" in items:
        for header, (hkey, hvalue) in reader.mapping(
            items["headers"][1], f"{where}.headers"
        ).items():
            value = reader.scalar(hvalue, f"{where}.headers.{header}")
            if not isinstance(value, str | int):
                raise reader.error(hvalue, f"{where}.headers.{header}", "expected a string")
            headers[header] = str(value)
            del hkey
    signing = reader.secret(items, "secret", where) if kind == "webhook" else None
    return Destination(
        name=name,
        kind=kind,
        url=url,
        url_secret=url_secret,
        signing_secret=signing,
        headers=headers,
        timeout=timeout,
    )


def _check_apprise_url(
    reader: _Reader,
    items: dict[str, tuple[yaml.Node, yaml.Node]],
    node: yaml.Node,
    where: str,
    url: str,
) -> None:
    import apprise

    at = items.get("url_env") or items.get("url_file")
    if apprise.Apprise.instantiate(url) is None:
        raise reader.error(
            at[1] if at else node, f"{where}.url", "apprise does not recognise this URL"
        )


def _email_destination(
    reader: _Reader,
    name: str,
    node: yaml.Node,
    items: dict[str, tuple[yaml.Node, yaml.Node]],
    timeout: float | None,
) -> Destination:
    where = f"destinations.{name}"
    for required in ("host", "from", "to"):
        if required not in items:
            raise reader.error(node, where, f"missing {required!r}")
    port = 587
    if "port" in items:
        value = reader.scalar(items["port"][1], f"{where}.port")
        if not isinstance(value, int) or not 0 < value < 65536:
            raise reader.error(items["port"][1], f"{where}.port", f"expected a port, got {value!r}")
        port = value
    tls = "starttls"
    if "tls" in items:
        tls = str(reader.scalar(items["tls"][1], f"{where}.tls"))
        if tls not in {"starttls", "ssl", "none"}:
            raise reader.error(items["tls"][1], f"{where}.tls", "expected starttls, ssl or none")
    recipients = []
    for rnode, value in reader.items(items["to"][1], f"{where}.to"):
        if not isinstance(value, str) or "@" not in value:
            raise reader.error(rnode, f"{where}.to", f"{value!r} is not an email address")
        recipients.append(value)
    sender = reader.text(items["from"][1], f"{where}.from")
    if "@" not in sender:
        raise reader.error(items["from"][1], f"{where}.from", f"{sender!r} is not an email address")
    username = (
        reader.text(items["username"][1], f"{where}.username") if "username" in items else None
    )
    return Destination(
        name=name,
        kind="email",
        timeout=timeout,
        smtp_host=reader.text(items["host"][1], f"{where}.host"),
        smtp_port=port,
        smtp_tls=tls,
        smtp_username=username,
        smtp_password=reader.secret(items, "password", where),
        mail_from=sender,
        mail_to=tuple(recipients),
    )


def _names(reader: _Reader, node: yaml.Node, where: str) -> frozenset[str] | None:
    """A list of names; ``*`` (alone or in the list) means any."""
    values = reader.items(node, where)
    names = set()
    for vnode, value in values:
        if not isinstance(value, str) or not value:
            raise reader.error(vnode, where, f"expected a name, got {value!r}")
        names.add(value)
    return None if "*" in names else frozenset(names)


def _ids_or_names(reader: _Reader, node: yaml.Node, where: str) -> tuple[int | str, ...]:
    out: list[int | str] = []
    for vnode, value in reader.items(node, where):
        if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
            raise reader.error(vnode, where, f"expected an id or a name, got {value!r}")
        out.append(value.casefold() if isinstance(value, str) else value)
    return tuple(out)


def _pattern(reader: _Reader, node: yaml.Node, where: str) -> re.Pattern[str]:
    text = reader.text(node, where)
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise reader.error(node, where, f"not a valid regular expression: {exc}") from None


def _check_known(
    reader: _Reader, node: yaml.Node, where: str, known: frozenset[str] | None
) -> None:
    """Warn for every value webhook.yaml's enum does not list (``*`` means any)."""
    if not known:
        return
    for vnode, value in reader.items(node, where):
        if not isinstance(value, str) or value == "*" or value in known:
            continue
        close = difflib.get_close_matches(value, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        reader.warn(
            vnode,
            where,
            f"{value!r} is not a value webhook.yaml knows{hint}; "
            "this condition never matches until NinjaOne sends it",
        )


def parse_duration(value: Any) -> float | None:
    """Seconds from ``90``, ``90s``, ``15m``, ``1h`` or ``2d``; None for ``none``/``off``.

    :raises ValueError: naming the accepted forms.
    """
    if isinstance(value, str) and value.strip().lower() in ("none", "off"):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip()[-1:].lower() in _DURATION_UNITS:
        text = value.strip()
        try:
            seconds = float(text[:-1]) * _DURATION_UNITS[text[-1].lower()]
        except ValueError:
            seconds = -1.0
    else:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"expected a duration (90s, 15m, 1h, 2d) or none, got {value!r}")
    return seconds


def _match(reader: _Reader, node: yaml.Node, where: str) -> Match:
    items = reader.mapping(node, where)
    reader.only(
        items,
        {
            "activityType",
            "statusCode",
            "minSeverity",
            "organization",
            "device",
            "nodeClass",
            "sourceName",
            "message",
        },
        where,
    )
    min_severity = None
    if "minSeverity" in items:
        value = reader.text(items["minSeverity"][1], f"{where}.minSeverity").upper()
        if value not in SEVERITIES:
            raise reader.error(
                items["minSeverity"][1],
                f"{where}.minSeverity",
                f"unknown severity {value!r} (one of {', '.join(SEVERITIES)})",
            )
        min_severity = value

    def get(key: str) -> yaml.Node | None:
        return items[key][1] if key in items else None

    for key, path in ENUM_KEYS.items():
        if key in items:
            _check_known(reader, items[key][1], f"{where}.{key}", KNOWN_VALUES.get(path))
    at = get("activityType")
    sc = get("statusCode")
    org = get("organization")
    dev = get("device")
    nc = get("nodeClass")
    sn = get("sourceName")
    msg = get("message")
    return Match(
        activity_types=_names(reader, at, f"{where}.activityType") if at else None,
        status_codes=_names(reader, sc, f"{where}.statusCode") if sc else None,
        min_severity=min_severity,
        organizations=_ids_or_names(reader, org, f"{where}.organization") if org else (),
        devices=_ids_or_names(reader, dev, f"{where}.device") if dev else (),
        node_classes=_names(reader, nc, f"{where}.nodeClass") if nc else None,
        source_name=_pattern(reader, sn, f"{where}.sourceName") if sn else None,
        message=_pattern(reader, msg, f"{where}.message") if msg else None,
    )


def parse_match(value: Mapping[str, Any], where: str) -> Match:
    """A match expression given as data (a silence's matchers), validated as a route's
    ``match`` is.

    :raises RoutesError: ``<where>.<key>: <cause>``.
    """
    reader = _Reader(where, {}, Path.cwd())
    try:
        node = yaml.compose(yaml.safe_dump(dict(value)))
        assert node is not None  # a mapping's dump is never empty
        return _match(reader, node, where)
    except RoutesError as exc:
        # The line of a YAML document made from data means nothing to its author.
        raise RoutesError(re.sub(rf"^{re.escape(where)}(:\d+)?: ", "", str(exc))) from None


def _route(
    reader: _Reader, index: int, node: yaml.Node, destinations: Mapping[str, Destination]
) -> Route:
    where = f"routes[{index}]"
    items = reader.mapping(node, where)
    reader.only(
        items,
        {
            "name",
            "match",
            "destinations",
            "once_per_alert",
            "resolved",
            "ignore_maintenance",
            "max_lateness",
            "notify_resolved_late",
            "wait",
            "repeat",
            "flapping",
            "group_by",
            "group_wait",
            "title",
            "template",
        },
        where,
    )
    if "name" not in items:
        raise reader.error(node, where, "missing 'name'")
    name = reader.text(items["name"][1], f"{where}.name")
    if not NAME_PATTERN.match(name):
        raise reader.error(
            items["name"][1], f"{where}.name", f"{name!r}: use letters, digits, '.', '_', '-'"
        )
    where = f"routes[{index}] ({name})"
    if "destinations" not in items:
        raise reader.error(node, where, "missing 'destinations'")
    targets: list[str] = []
    for dnode, value in reader.items(items["destinations"][1], f"{where}.destinations"):
        if value not in destinations:
            known = ", ".join(sorted(destinations)) or "none defined"
            raise reader.error(
                dnode, f"{where}.destinations", f"unknown destination {value!r} (known: {known})"
            )
        if value in targets:
            raise reader.error(dnode, f"{where}.destinations", f"{value!r} is listed twice")
        targets.append(value)
    if not targets:
        raise reader.error(items["destinations"][1], f"{where}.destinations", "no destination")
    match = _match(reader, items["match"][1], f"{where}.match") if "match" in items else Match()
    templates: dict[str, jinja2.Template] = {}
    for key in ("title", "template"):
        if key in items:
            source = reader.text(items[key][1], f"{where}.{key}")
            try:
                templates[key] = compile_template(source)
            except jinja2.TemplateSyntaxError as exc:
                tnode = items[key][1]
                # A block scalar (| or >) starts on the line after its indicator.
                block = isinstance(tnode, yaml.ScalarNode) and tnode.style in ("|", ">")
                line = tnode.start_mark.line + exc.lineno + (1 if block else 0)
                raise RoutesError(
                    f"{reader.path}:{line}: {where}.{key}: template error: {exc.message}"
                ) from None
    once_per_alert = (
        reader.boolean(items["once_per_alert"][1], f"{where}.once_per_alert")
        if "once_per_alert" in items
        else True
    )
    for key in ("wait", "repeat"):
        if key in items and not once_per_alert:
            # Both act on the route's notice of an alert, which only once_per_alert keeps.
            raise reader.error(items[key][0], f"{where}.{key}", "needs once_per_alert: true")
    if "group_by" in items:
        per_alert = [t for t in targets if destinations[t].kind in VENDOR_KINDS]
        if per_alert:
            # One grouped message stands for many alerts; these kinds keep one incident
            # per alert (pagerduty, opsgenie) or one event per activity (SIEM kinds).
            raise reader.error(
                items["group_by"][0],
                f"{where}.group_by",
                f"cannot group for {', '.join(per_alert)} "
                f"({destinations[per_alert[0]].kind} takes one alert or activity at a time); "
                "send to it from a route without group_by",
            )
    return Route(
        name=name,
        match=match,
        destinations=tuple(targets),
        once_per_alert=once_per_alert,
        send_resolved=reader.boolean(items["resolved"][1], f"{where}.resolved")
        if "resolved" in items
        else True,
        ignore_maintenance=reader.boolean(
            items["ignore_maintenance"][1], f"{where}.ignore_maintenance"
        )
        if "ignore_maintenance" in items
        else False,
        max_lateness=_lateness(reader, items, where),
        notify_resolved_late=reader.boolean(
            items["notify_resolved_late"][1], f"{where}.notify_resolved_late"
        )
        if "notify_resolved_late" in items
        else False,
        wait=_duration(reader, items, where, "wait"),
        repeat=_duration(reader, items, where, "repeat"),
        flapping=_flapping(reader, items["flapping"][1], f"{where}.flapping")
        if "flapping" in items
        else None,
        group_by=_group_by(reader, items, where),
        group_wait=_duration(reader, items, where, "group_wait") or DEFAULT_GROUP_WAIT,
        title=templates.get("title"),
        template=templates.get("template"),
        line=node.start_mark.line + 1,
    )


def _group_by(
    reader: _Reader, items: dict[str, tuple[yaml.Node, yaml.Node]], where: str
) -> tuple[str, ...]:
    if "group_by" not in items:
        if "group_wait" in items:
            raise reader.error(items["group_wait"][0], f"{where}.group_wait", "needs group_by")
        return ()
    keys: list[str] = []
    for node, value in reader.items(items["group_by"][1], f"{where}.group_by"):
        if value not in GROUP_BY_KEYS:
            raise reader.error(
                node,
                f"{where}.group_by",
                f"unknown key {value!r} (one of {', '.join(GROUP_BY_KEYS)})",
            )
        if value not in keys:
            keys.append(value)
    if not keys:
        raise reader.error(items["group_by"][1], f"{where}.group_by", "no key")
    return tuple(keys)


def _flapping(reader: _Reader, node: yaml.Node, where: str) -> Flapping:
    items = reader.mapping(node, where)
    reader.only(items, {"threshold", "window", "calm"}, where)
    if "threshold" not in items:
        raise reader.error(node, where, "missing 'threshold' (firings within the window)")
    threshold = reader.number(items["threshold"][1], f"{where}.threshold")
    if threshold != int(threshold) or threshold < 2:
        raise reader.error(
            items["threshold"][1],
            f"{where}.threshold",
            f"expected a whole number ≥ 2, got {threshold:g}",
        )
    window = _duration(reader, items, where, "window")
    calm = _duration(reader, items, where, "calm")
    return Flapping(
        threshold=int(threshold),
        window=window if window is not None else Flapping.window,
        calm=calm if calm is not None else Flapping.calm,
    )


def _duration(
    reader: _Reader, items: dict[str, tuple[yaml.Node, yaml.Node]], where: str, key: str
) -> float | None:
    if key not in items:
        return None
    node = items[key][1]
    try:
        return parse_duration(reader.scalar(node, f"{where}.{key}"))
    except ValueError as exc:
        raise reader.error(node, f"{where}.{key}", str(exc)) from None


def _lateness(
    reader: _Reader, items: dict[str, tuple[yaml.Node, yaml.Node]], where: str
) -> float | None:
    if "max_lateness" not in items:
        return DEFAULT_MAX_LATENESS
    node = items["max_lateness"][1]
    value = reader.scalar(node, f"{where}.max_lateness")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise reader.error(node, f"{where}.max_lateness", str(exc)) from None
