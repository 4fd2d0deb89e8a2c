"""Configuration: one table of settings that is the config, its validation and its docs.

Every setting has a name, a default, the environment variable that sets it and a
help text. :func:`load_config` reads the environment (or explicit overrides, as
``create_app`` and the tests pass them) and validates every value, naming the
variable when one is wrong. ``ninjahook settings`` prints :data:`SETTINGS`; a test
checks that the README's table names every variable.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.tokens import token_label


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


# A smaller body limit would refuse real deliveries (413), which NinjaOne never retries.
MIN_BODY_BYTES = 1024
# Python's log level names, as NINJAHOOK_LOG_LEVEL (and gunicorn's loglevel) take them.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# NINJAHOOK_LOG_FORMAT: plain lines, or one JSON object per line (app.logs).
LOG_FORMATS = ("text", "json")
# The database URLs ninjahook runs on: backend → drivers (None: the backend's default).
DATABASE_DRIVERS = {"sqlite": (None, "pysqlite"), "postgresql": (None, "psycopg")}


def _parse_int(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None


def _parse_port(value: str) -> int:
    number = _parse_int(value)
    if not 1 <= number <= 65535:
        raise ValueError(f"expected a port from 1 to 65535, got {value!r}")
    return number


def _parse_non_negative_int(value: str) -> int:
    number = _parse_int(value)
    if number < 0:
        raise ValueError(f"expected a whole number of at least 0 (0: off), got {value!r}")
    return number


def _parse_body_bytes(value: str) -> int:
    number = _parse_int(value)
    if number < MIN_BODY_BYTES:
        raise ValueError(
            f"expected at least {MIN_BODY_BYTES} bytes (a smaller limit refuses every "
            f"delivery with 413, and NinjaOne does not retry), got {value!r}"
        )
    return number


def _parse_log_level(value: str) -> str:
    level = value.strip().upper()
    if level == "WARN":
        level = "WARNING"
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def _parse_log_format(value: str) -> str:
    fmt = value.strip().lower()
    if fmt not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return fmt


def _redacted(value: str) -> str:
    """``value`` with any password hidden, for messages."""
    if "@" not in value:
        return value
    scheme, _, rest = value.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}" if rest else "***"


def _parse_database_url(value: str) -> str:
    """Empty (SQLite in the instance folder), or a SQLAlchemy URL of SQLite or PostgreSQL
    (``postgres://`` and ``postgresql://`` select psycopg 3)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = value.strip()
    if not url:
        return url
    allowed = "a SQLAlchemy URL sqlite:///path or postgresql://user@host/db (or empty for SQLite)"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError(f"expected {allowed}, got {_redacted(url)!r}") from None
    backend, _, driver = parsed.drivername.partition("+")
    backend = "postgresql" if backend == "postgres" else backend
    if (driver or None) not in DATABASE_DRIVERS.get(backend, ()):
        raise ValueError(f"expected {allowed}, got {_redacted(url)!r}")
    return url


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected 1/0, true/false, yes/no or on/off, got {value!r}")


def _parse_tokens(value: str) -> tuple[str, ...]:
    tokens = tuple(t.strip() for t in value.split(",") if t.strip())
    for token in tokens:
        if len(token) < 16:
            raise ValueError("every token must be at least 16 characters long")
    return tokens


def _parse_operator_tokens(value: str) -> tuple[tuple[str, str], ...]:
    """``label:token`` entries (or a bare token, labelled by a hash of it), comma-separated."""
    entries = []
    for entry in (e.strip() for e in value.split(",") if e.strip()):
        label, sep, token = entry.partition(":")
        if not sep:
            label, token = "", entry
        label, token = label.strip(), token.strip()
        if sep and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}", label):
            raise ValueError(
                "an operator token's label (before ':') is letters, digits, '.', '_', '@', '-'"
            )
        if len(token) < 16:
            raise ValueError("every token must be at least 16 characters long")
        entries.append((label or token_label(token), token))
    if len({label for label, _ in entries}) != len(entries):
        raise ValueError("two operator tokens have the same label")
    return tuple(entries)


def _parse_str(value: str) -> str:
    return value.strip()


def _parse_sync(value: str) -> str:
    mode = value.strip().upper()
    if mode not in {"NORMAL", "FULL"}:
        raise ValueError(f"expected NORMAL or FULL, got {value!r}")
    return mode


def _parse_positive_int(value: str) -> int:
    number = _parse_int(value)
    if number < 1:
        raise ValueError(f"expected a whole number of at least 1, got {value!r}")
    return number


def _parse_duration(value: str) -> int:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h`` or ``1d``; ``0``/``off`` disables."""
    text = value.strip().lower()
    if text in {"", "0", "off", "none"}:
        return 0
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], units[text[-1]]) if text[-1] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"expected a duration such as 90, 90s, 15m, 2h or 1d (0 or off: never), got {value!r}"
        )
    return int(seconds)


def _parse_seconds(value: str) -> float:
    """Non-negative seconds, fractions allowed (``0.2``)."""
    try:
        seconds = float(value.strip().rstrip("s"))
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected seconds >= 0, such as 10 or 0.5, got {value!r}")
    return seconds


def _parse_rate(value: str) -> float:
    """Requests per second > 0, fractions allowed (``0.5``: one every two seconds)."""
    try:
        rate = float(value.strip())
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"expected requests per second > 0, such as 5 or 0.5, got {value!r}")
    return rate


def _parse_positive_seconds(value: str) -> float:
    """Seconds > 0, fractions allowed: a wait that 0 would turn into a busy loop or an
    immediate failure."""
    seconds = _parse_seconds(value)
    if seconds <= 0:
        raise ValueError(f"expected seconds > 0, such as 10 or 0.5, got {value!r}")
    return seconds


def _parse_body_timeout(value: str) -> float:
    """0 (off) or at least one second: a shorter limit would answer every delivery 408."""
    seconds = _parse_seconds(value)
    if 0 < seconds < 1:
        raise ValueError(f"expected 0 (off) or at least 1 second, got {value!r}")
    return seconds


def _parse_public_url(value: str) -> str:
    url = value.strip().rstrip("/")
    if url and not url.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return url


def _parse_mail_domain(value: str) -> str:
    domain = value.strip().lower()
    if domain and not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", domain):
        raise ValueError(f"expected a domain such as ninjahook.example.com, got {value!r}")
    return domain


def _parse_worker_mode(value: str) -> str:
    mode = value.strip().lower()
    if mode not in {"auto", "on", "off"}:
        raise ValueError(f"expected auto, on or off, got {value!r}")
    return mode


@dataclass(frozen=True)
class Setting:
    """One row of the settings table, as ``ninjahook settings`` and the README show it."""

    name: str
    default: Any
    env: str
    help: str
    parse: Callable[[str], Any] = _parse_str
    secret: bool = False


def setting(
    default: Any,
    env: str,
    help: str,
    *,
    parse: Callable[[str], Any] = _parse_str,
    secret: bool = False,
) -> Any:
    """A :class:`Config` field with its environment variable, help text and parser."""
    return field(
        default=default, metadata={"env": env, "help": help, "parse": parse, "secret": secret}
    )


@dataclass(frozen=True)
class Config:
    """Validated settings, one typed field per setting: the settings table itself.

    Build it with :func:`load_config`. Each field's metadata names its environment
    variable, help text and parser; :data:`SETTINGS` is read off these fields.
    """

    instance_path: str = setting(
        "instance",
        "NINJAHOOK_INSTANCE_PATH",
        "Folder for the SQLite database, the generated webhook token and other local state.",
    )
    database_url: str = setting(
        "",
        "NINJAHOOK_DATABASE_URL",
        "SQLAlchemy URL. Empty: SQLite file ninjahook.sqlite3 in the instance folder. "
        "postgresql://… or postgresql+psycopg://… for PostgreSQL (psycopg 3).",
        parse=_parse_database_url,
        secret=True,
    )
    webhook_tokens: tuple[str, ...] = setting(
        (),
        "NINJAHOOK_WEBHOOK_TOKENS",
        "Comma-separated tokens that may deliver activities (two during a rotation). "
        "Empty: `ninjahook serve` generates one into the instance folder.",
        parse=_parse_tokens,
        secret=True,
    )
    api_tokens: tuple[str, ...] = setting(
        (),
        "NINJAHOOK_API_TOKENS",
        "Comma-separated tokens for the read API, the dashboard and /metrics. "
        "Separate from the webhook tokens.",
        parse=_parse_tokens,
        secret=True,
    )
    operator_tokens: tuple[tuple[str, str], ...] = setting(
        (),
        "NINJAHOOK_OPERATOR_TOKENS",
        "Comma-separated `label:token` entries for operators: they read like a read token "
        "and may also silence, acknowledge, reset a condition in NinjaOne and retry "
        "deliveries; each action is recorded under the label. Separate from the webhook "
        "and read tokens. Empty: no operator.",
        parse=_parse_operator_tokens,
        secret=True,
    )
    max_body_bytes: int = setting(
        1048576,
        "NINJAHOOK_MAX_BODY_BYTES",
        "Largest accepted delivery body in bytes (at least 1024); larger bodies get 413.",
        parse=_parse_body_bytes,
    )
    rejected_max_rows: int = setting(
        10000,
        "NINJAHOOK_REJECTED_MAX_ROWS",
        "Most rejected deliveries kept; keeping one more drops the oldest (counted in "
        "the metric counter rejected_dropped and shown on the dashboard).",
        parse=_parse_positive_int,
    )
    rejected_max_bytes: int = setting(
        268435456,
        "NINJAHOOK_REJECTED_MAX_BYTES",
        "Most bytes of rejected delivery bodies kept (together); keeping one more drops "
        "the oldest. A single body is cut to this size.",
        parse=_parse_positive_int,
    )
    preview_chars: int = setting(
        4096,
        "NINJAHOOK_PREVIEW_CHARS",
        "Lists and the dashboard show this many characters of a message or subject and "
        "bytes of a rejected body, marked truncated; the item's own endpoint has the whole.",
        parse=_parse_positive_int,
    )
    list_payload_bytes: int = setting(
        16384,
        "NINJAHOOK_LIST_PAYLOAD_BYTES",
        "A list item carries its activity's payload when the body received is at most "
        "this many bytes; otherwise payload is null, marked truncated.",
        parse=_parse_positive_int,
    )
    body_timeout: float = setting(
        30.0,
        "NINJAHOOK_BODY_TIMEOUT",
        "Seconds a client may take to send a whole request body; a slower (slow-drip) "
        "body gets 408. 0 disables; otherwise at least 1.",
        parse=_parse_body_timeout,
    )
    header_timeout: float = setting(
        10.0,
        "NINJAHOOK_HEADER_TIMEOUT",
        "Seconds a connection may take to send a request's headers, from its opening or "
        "its previous response; then it is closed, so idle and slow-header sockets cannot "
        "pile up. 0 disables; otherwise at least 1.",
        parse=_parse_body_timeout,
    )
    sqlite_synchronous: str = setting(
        "NORMAL",
        "NINJAHOOK_SQLITE_SYNCHRONOUS",
        "SQLite durability: NORMAL (WAL; survives a killed process) or FULL "
        "(also survives power loss, slower).",
        parse=_parse_sync,
    )
    sqlite_writer_lock: bool = setting(
        True,
        "NINJAHOOK_SQLITE_WRITER_LOCK",
        "SQLite: queue write transactions of all workers on a file lock beside the "
        "database instead of SQLite's sleeping busy handler (faster with several workers).",
        parse=_parse_bool,
    )
    ingest_max_batch: int = setting(
        128,
        "NINJAHOOK_INGEST_MAX_BATCH",
        "Most deliveries that share one write transaction (group commit: deliveries that "
        "arrive together are committed together, each answered after that commit). "
        "1 gives every delivery its own transaction.",
        parse=_parse_positive_int,
    )
    log_level: str = setting(
        "INFO",
        "NINJAHOOK_LOG_LEVEL",
        "Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
        parse=_parse_log_level,
    )
    log_format: str = setting(
        "text",
        "NINJAHOOK_LOG_FORMAT",
        "Log format: text (time [pid] LEVEL logger: message) or json (one JSON object "
        "per line: time, level, logger, message and the request's fields).",
        parse=_parse_log_format,
    )
    host: str = setting(
        "127.0.0.1",
        "NINJAHOOK_HOST",
        "Address `ninjahook serve` listens on.",
    )
    port: int = setting(
        8080,
        "NINJAHOOK_PORT",
        "Port `ninjahook serve` listens on.",
        parse=_parse_port,
    )
    retention_days: int = setting(
        90,
        "NINJAHOOK_RETENTION_DAYS",
        "Activities received more than this many days ago are pruned (open alerts' "
        "history is kept).",
        parse=_parse_non_negative_int,
    )
    # None: not set (every 15 minutes when the NinjaOne credentials are set, else never);
    # 0: explicitly off. app.ninjaone.schedule.backfill_schedule decides.
    backfill_interval: int | None = setting(
        None,
        "NINJAHOOK_BACKFILL_INTERVAL",
        "Run `backfill` from the server this often (e.g. 15m); 0 or off disables. "
        "Not set: every 15m when the NinjaOne credentials are set.",
        parse=_parse_duration,
    )
    sync_interval: int = setting(
        6 * 3600,
        "NINJAHOOK_SYNC_INTERVAL",
        "Run a full entity sync from the server this often (e.g. 6h) when the NinjaOne "
        "credentials are set; 0 or off disables. Entities it no longer finds are marked "
        "deleted.",
        parse=_parse_duration,
    )
    session_idle: int = setting(
        8 * 3600,
        "NINJAHOOK_SESSION_IDLE",
        "A dashboard session unused this long (e.g. 8h) ends; 0 or off: no idle limit.",
        parse=_parse_duration,
    )
    session_max: int = setting(
        7 * 86400,
        "NINJAHOOK_SESSION_MAX",
        "A dashboard session ends this long (e.g. 7d) after its login, however much it is used.",
        parse=_parse_duration,
    )
    metrics_public: bool = setting(
        False,
        "NINJAHOOK_METRICS_PUBLIC",
        "Serve /metrics without a token.",
        parse=_parse_bool,
    )
    routes_file: str = setting(
        "",
        "NINJAHOOK_ROUTES",
        "YAML file of routes that forward activities to destinations.",
    )
    delivery_worker: str = setting(
        "auto",
        "NINJAHOOK_DELIVERY_WORKER",
        "Deliver routed activities from inside the server: auto (on SQLite only; run "
        "`ninjahook worker` beside PostgreSQL), on or off.",
        parse=_parse_worker_mode,
    )
    delivery_max_attempts: int = setting(
        8,
        "NINJAHOOK_DELIVERY_MAX_ATTEMPTS",
        "Attempts per delivery before it becomes a dead letter.",
        parse=_parse_positive_int,
    )
    delivery_backoff: float = setting(
        10.0,
        "NINJAHOOK_DELIVERY_BACKOFF",
        "Seconds before the first retry; doubles per attempt, with jitter.",
        parse=_parse_seconds,
    )
    delivery_backoff_max: float = setting(
        3600.0,
        "NINJAHOOK_DELIVERY_BACKOFF_MAX",
        "Longest wait between retries in seconds (a destination's Retry-After may ask for more).",
        parse=_parse_seconds,
    )
    delivery_lease: float = setting(
        60.0,
        "NINJAHOOK_DELIVERY_LEASE",
        "Seconds a worker holds a delivery; one whose worker died is retried after this.",
        parse=_parse_positive_seconds,
    )
    delivery_timeout: float = setting(
        10.0,
        "NINJAHOOK_DELIVERY_TIMEOUT",
        "Seconds to wait for a destination to answer.",
        parse=_parse_positive_seconds,
    )
    delivery_concurrency: int = setting(
        4,
        "NINJAHOOK_DELIVERY_CONCURRENCY",
        "Deliveries a worker sends at once (a slow destination does not hold up the rest).",
        parse=_parse_positive_int,
    )
    public_url: str = setting(
        "",
        "NINJAHOOK_PUBLIC_URL",
        "This server's address as people reach it (https://ninjahook.example.com): "
        "notifications link to the alert on its dashboard.",
        parse=_parse_public_url,
    )
    mail_domain: str = setting(
        "",
        "NINJAHOOK_MAIL_DOMAIN",
        "Domain of e-mail Message-IDs (default: NINJAHOOK_PUBLIC_URL's host, else the "
        "domain of the destination's from address).",
        parse=_parse_mail_domain,
    )
    delivery_poll_interval: float = setting(
        1.0,
        "NINJAHOOK_DELIVERY_POLL_INTERVAL",
        "Seconds an idle worker waits before looking for due deliveries again.",
        parse=_parse_positive_seconds,
    )
    background_tasks: bool = setting(
        True,
        "NINJAHOOK_BACKGROUND_TASKS",
        "Run periodic tasks (backfill, prune, delivery) in the server.",
        parse=_parse_bool,
    )
    ninjaone_region: str = setting(
        "",
        "NINJAONE_REGION",
        "NinjaOne region: app, us2, eu, ca or oc.",
    )
    ninjaone_base_url: str = setting(
        "",
        "NINJAONE_BASE_URL",
        "NinjaOne base URL (overrides the region), e.g. https://eu.ninjarmm.com.",
    )
    ninjaone_client_id: str = setting(
        "",
        "NINJAONE_CLIENT_ID",
        "NinjaOne API client id.",
        secret=True,
    )
    ninjaone_client_secret: str = setting(
        "",
        "NINJAONE_CLIENT_SECRET",
        "NinjaOne API client secret.",
        secret=True,
    )
    ninjaone_rate: float = setting(
        5.0,
        "NINJAHOOK_NINJAONE_RATE",
        "Requests per second this process sends to NinjaOne's API at most (all callers "
        "share it; a 429's Retry-After pauses them all).",
        parse=_parse_rate,
    )

    @property
    def instance(self) -> Path:
        """The instance folder as an absolute path."""
        return Path(self.instance_path).resolve()

    def replace(self, **changes: Any) -> Config:
        """A copy with some values replaced (already parsed)."""
        return dataclasses.replace(self, **changes)


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, f.default, **f.metadata) for f in dataclasses.fields(Config)
)
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def load_config(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read every setting from ``environ`` (default: ``os.environ``), then apply ``overrides``.

    Overrides are keyed by setting name; a string override is parsed like the
    environment variable, anything else is taken as already parsed.

    :raises ConfigError: naming the variable and the cause when a value is invalid.
    """
    env = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(SETTINGS_BY_NAME)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in overrides:
            raw: Any = overrides[setting.name]
            # The CLI's options and create_app's overrides stand for the variable.
            source = setting.env
        elif setting.env in env:
            raw = env[setting.env]
            source = setting.env
        else:
            continue
        if isinstance(raw, str):
            try:
                values[setting.name] = setting.parse(raw)
            except ValueError as exc:
                # One line: the variable, the value (in the parser's message) and what
                # is allowed.
                raise ConfigError(f"{source}: {' '.join(str(exc).split())}") from None
        else:
            values[setting.name] = raw
    config = Config(**values)
    check_token_roles(config)
    return config


def check_token_roles(config: Config) -> None:
    """A token must not be both a webhook token and a read token: the one stored in
    NinjaOne would then read everything. The message never contains the token."""
    if set(config.webhook_tokens) & set(config.api_tokens):
        raise ConfigError(
            f"{SETTINGS_BY_NAME['webhook_tokens'].env} and {SETTINGS_BY_NAME['api_tokens'].env} "
            "share a token: a webhook token must not also be a read token"
        )
    operator = {token for _label, token in config.operator_tokens}
    for other in ("webhook_tokens", "api_tokens"):
        if operator & set(getattr(config, other)):
            raise ConfigError(
                f"{SETTINGS_BY_NAME['operator_tokens'].env} and {SETTINGS_BY_NAME[other].env} "
                "share a token: operator tokens are a set of their own"
            )


def check_instance_folder(config: Config) -> None:
    """Create the instance folder if needed and check that ninjahook can write in it
    (the SQLite database, generated tokens, gunicorn's control socket).

    :raises ConfigError: naming NINJAHOOK_INSTANCE_PATH, the folder and the cause.
    """
    env = SETTINGS_BY_NAME["instance_path"].env
    folder = config.instance
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        cause = exc.strerror or exc.__class__.__name__
        raise ConfigError(
            f"{env}: the instance folder {str(folder)!r} must be a folder ninjahook can "
            f"write in: {cause}"
        ) from None
