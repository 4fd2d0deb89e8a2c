"""How often the server recovers missed activities, and why: one decision that the
scheduler (:func:`app.services.periodic_tasks`), the start-up line and ``ninjahook
status`` share.

``NINJAHOOK_BACKFILL_INTERVAL`` has three states. Not set: backfill runs every
:data:`DEFAULT_BACKFILL_INTERVAL` seconds when the NinjaOne credentials are set, and not
at all without them (nothing to warn about). Set to a duration: that interval, and a
warning when the credentials are missing. Set to ``0``/``off``: never.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Config
from app.ninjaone.client import credentials_configured

# Recovery is on by default: a delivery NinjaOne drops is stored within 15 minutes.
DEFAULT_BACKFILL_INTERVAL = 15 * 60


@dataclass(frozen=True)
class Schedule:
    """``interval`` seconds between runs (0: not run), and the reason in words."""

    interval: int
    reason: str
    # The interval was set but cannot be honoured (no credentials): worth a warning.
    misconfigured: bool = False

    @property
    def active(self) -> bool:
        return self.interval > 0


def duration(seconds: float) -> str:
    """``15m``, ``2h``, ``1d``, ``90s``: the shortest exact form of ``seconds``."""
    whole = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def backfill_schedule(config: Config) -> Schedule:
    """When the server runs backfill, from NINJAHOOK_BACKFILL_INTERVAL and the credentials."""
    configured = credentials_configured(config)
    if config.backfill_interval is None:
        if configured:
            return Schedule(
                DEFAULT_BACKFILL_INTERVAL,
                f"every {duration(DEFAULT_BACKFILL_INTERVAL)} (the default with NinjaOne "
                "credentials; NINJAHOOK_BACKFILL_INTERVAL=off turns it off)",
            )
        return Schedule(0, "off (no NINJAONE_CLIENT_ID/NINJAONE_CLIENT_SECRET)")
    if config.backfill_interval == 0:
        return Schedule(0, "off (NINJAHOOK_BACKFILL_INTERVAL=off)")
    if not configured:
        return Schedule(
            0,
            "off (NINJAHOOK_BACKFILL_INTERVAL is set but NINJAONE_CLIENT_ID/"
            "NINJAONE_CLIENT_SECRET are not)",
            misconfigured=True,
        )
    return Schedule(
        config.backfill_interval,
        f"every {duration(config.backfill_interval)} (NINJAHOOK_BACKFILL_INTERVAL)",
    )


def sync_schedule(config: Config) -> Schedule:
    """When the server refreshes the entity cache (NINJAHOOK_SYNC_INTERVAL, when that
    setting exists in this version)."""
    interval = int(getattr(config, "sync_interval", 0) or 0)
    if interval <= 0:
        return Schedule(0, "off")
    if not credentials_configured(config):
        return Schedule(0, "off (no NinjaOne credentials)")
    return Schedule(interval, f"every {duration(interval)} (NINJAHOOK_SYNC_INTERVAL)")


def sources_line(config: Config) -> str:
    """The one start-up line: where activities come from in this server."""
    backfill = backfill_schedule(config)
    sync = sync_schedule(config)
    if not config.background_tasks and (backfill.active or sync.active):
        suffix = " — but NINJAHOOK_BACKGROUND_TASKS=0: no periodic task runs here"
    else:
        suffix = ""
    return (
        f"ninjahook sources: webhook on; backfill {backfill.reason}; "
        f"entity sync {sync.reason}{suffix}"
    )
