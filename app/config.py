"""Configuration: one table of settings that is the config, its validation and its docs.

Every setting has a name, a default, the environment variable that sets it and a
help text. :func:`load_config` reads the environment (or explicit overrides, as
``create_app`` and the tests pass them) and validates every value, naming the
variable when one is wrong. ``ninjahook settings`` and the README's table are
rendered from :data:`SETTINGS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _parse_int(value: str) -> int:
    return int(value.strip())


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
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _parse_seconds(value: str) -> float:
    """Non-negative seconds, fractions allowed (``0.2``)."""
    seconds = float(value.strip().rstrip("s"))
    if seconds < 0:
        raise ValueError(f"expected seconds >= 0, got {value!r}")
    return seconds


def _parse_worker_mode(value: str) -> str:
    mode = value.strip().lower()
    if mode not in {"auto", "on", "off"}:
        raise ValueError(f"expected auto, on or off, got {value!r}")
    return mode


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str
    default: Any
    env: str
    help: str
    parse: Callable[[str], Any] = _parse_str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "instance_path",
        "instance",
        "NINJAHOOK_INSTANCE_PATH",
        "Folder for the SQLite database, the generated webhook token and other local state.",
    ),
    Setting(
        "database_url",
        "",
        "NINJAHOOK_DATABASE_URL",
        "SQLAlchemy URL. Empty: SQLite file ninjahook.sqlite3 in the instance folder. "
        "postgresql://… or postgresql+psycopg://… for PostgreSQL (psycopg 3).",
        secret=True,
    ),
    Setting(
        "webhook_tokens",
        (),
        "NINJAHOOK_WEBHOOK_TOKENS",
        "Comma-separated tokens that may deliver activities (two during a rotation). "
        "Empty: `ninjahook serve` generates one into the instance folder.",
        _parse_tokens,
        secret=True,
    ),
    Setting(
        "api_tokens",
        (),
        "NINJAHOOK_API_TOKENS",
        "Comma-separated tokens for the read API, the dashboard and /metrics. "
        "Separate from the webhook tokens.",
        _parse_tokens,
        secret=True,
    ),
    Setting(
        "max_body_bytes",
        1048576,
        "NINJAHOOK_MAX_BODY_BYTES",
        "Largest accepted delivery body in bytes; larger bodies get 413.",
        _parse_int,
    ),
    Setting(
        "body_timeout",
        30.0,
        "NINJAHOOK_BODY_TIMEOUT",
        "Seconds a client may take to send a whole request body; a slower (slow-drip) "
        "body gets 408. 0 disables.",
        _parse_seconds,
    ),
    Setting(
        "sqlite_synchronous",
        "NORMAL",
        "NINJAHOOK_SQLITE_SYNCHRONOUS",
        "SQLite durability: NORMAL (WAL; survives a killed process) or FULL "
        "(also survives power loss, slower).",
        _parse_sync,
    ),
    Setting(
        "sqlite_writer_lock",
        True,
        "NINJAHOOK_SQLITE_WRITER_LOCK",
        "SQLite: queue write transactions of all workers on a file lock beside the "
        "database instead of SQLite's sleeping busy handler (faster with several workers).",
        _parse_bool,
    ),
    Setting(
        "ingest_max_batch",
        128,
        "NINJAHOOK_INGEST_MAX_BATCH",
        "Most deliveries that share one write transaction (group commit: deliveries that "
        "arrive together are committed together, each answered after that commit). "
        "1 gives every delivery its own transaction.",
        _parse_positive_int,
    ),
    Setting("log_level", "INFO", "NINJAHOOK_LOG_LEVEL", "Log level (DEBUG, INFO, WARNING…)."),
    Setting("host", "127.0.0.1", "NINJAHOOK_HOST", "Address `ninjahook serve` listens on."),
    Setting("port", 8080, "NINJAHOOK_PORT", "Port `ninjahook serve` listens on.", _parse_int),
    Setting(
        "retention_days",
        90,
        "NINJAHOOK_RETENTION_DAYS",
        "Activities older than this are pruned (open alerts' history is kept).",
        _parse_int,
    ),
    Setting(
        "backfill_interval",
        0,
        "NINJAHOOK_BACKFILL_INTERVAL",
        "Run `backfill` from the server this often (e.g. 15m); 0 or off disables.",
        _parse_duration,
    ),
    Setting(
        "metrics_public",
        False,
        "NINJAHOOK_METRICS_PUBLIC",
        "Serve /metrics without a token.",
        _parse_bool,
    ),
    Setting(
        "routes_file",
        "",
        "NINJAHOOK_ROUTES",
        "YAML file of routes that forward activities to destinations.",
    ),
    Setting(
        "delivery_worker",
        "auto",
        "NINJAHOOK_DELIVERY_WORKER",
        "Deliver routed activities from inside the server: auto (on SQLite only; run "
        "`ninjahook worker` beside PostgreSQL), on or off.",
        _parse_worker_mode,
    ),
    Setting(
        "delivery_max_attempts",
        8,
        "NINJAHOOK_DELIVERY_MAX_ATTEMPTS",
        "Attempts per delivery before it becomes a dead letter.",
        _parse_positive_int,
    ),
    Setting(
        "delivery_backoff",
        10.0,
        "NINJAHOOK_DELIVERY_BACKOFF",
        "Seconds before the first retry; doubles per attempt, with jitter.",
        _parse_seconds,
    ),
    Setting(
        "delivery_backoff_max",
        3600.0,
        "NINJAHOOK_DELIVERY_BACKOFF_MAX",
        "Longest wait between retries in seconds (a destination's Retry-After may ask for more).",
        _parse_seconds,
    ),
    Setting(
        "delivery_lease",
        60.0,
        "NINJAHOOK_DELIVERY_LEASE",
        "Seconds a worker holds a delivery; one whose worker died is retried after this.",
        _parse_seconds,
    ),
    Setting(
        "delivery_timeout",
        10.0,
        "NINJAHOOK_DELIVERY_TIMEOUT",
        "Seconds to wait for a destination to answer.",
        _parse_seconds,
    ),
    Setting(
        "delivery_concurrency",
        4,
        "NINJAHOOK_DELIVERY_CONCURRENCY",
        "Deliveries a worker sends at once (a slow destination does not hold up the rest).",
        _parse_positive_int,
    ),
    Setting(
        "delivery_poll_interval",
        1.0,
        "NINJAHOOK_DELIVERY_POLL_INTERVAL",
        "Seconds an idle worker waits before looking for due deliveries again.",
        _parse_seconds,
    ),
    Setting(
        "background_tasks",
        True,
        "NINJAHOOK_BACKGROUND_TASKS",
        "Run periodic tasks (backfill, prune, delivery) in the server.",
        _parse_bool,
    ),
    Setting("ninjaone_region", "", "NINJAONE_REGION", "NinjaOne region: app, us2, eu, ca or oc."),
    Setting(
        "ninjaone_base_url",
        "",
        "NINJAONE_BASE_URL",
        "NinjaOne base URL (overrides the region), e.g. https://eu.ninjarmm.com.",
    ),
    Setting("ninjaone_client_id", "", "NINJAONE_CLIENT_ID", "NinjaOne API client id.", secret=True),
    Setting(
        "ninjaone_client_secret",
        "",
        "NINJAONE_CLIENT_SECRET",
        "NinjaOne API client secret.",
        secret=True,
    ),
)

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Config:
    """Validated settings. Build it with :func:`load_config`."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def instance(self) -> Path:
        """The instance folder as an absolute path."""
        return Path(self.values["instance_path"]).resolve()

    def replace(self, **changes: Any) -> Config:
        """A copy with some values replaced (already parsed)."""
        return Config({**self.values, **changes})


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
            source = f"setting {setting.name}"
        elif setting.env in env:
            raw = env[setting.env]
            source = setting.env
        else:
            values[setting.name] = setting.default
            continue
        if isinstance(raw, str):
            try:
                values[setting.name] = setting.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        else:
            values[setting.name] = raw
    return Config(values)
