"""The per-application state that :mod:`app.services` builds and requests reach.

Every service an app holds is a typed field here. Its types come from the domain
packages, which themselves take an :class:`AppState`; they are imported for the type
checker only, so that this module stays below the domains at run time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.config import Config
from app.storage.db import Database

if TYPE_CHECKING:
    from app.ingest.group_commit import GroupCommitter
    from app.ingest.pipeline import Pipeline
    from app.metrics.service import CounterBuffer
    from app.notifications.outbox import Suppress
    from app.notifications.routes import RoutesConfig


@dataclass
class DriftLog:
    """Unknown enum values already logged by this process (the database counts each one)."""

    logged: set[tuple[str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class AppState:
    """Everything a request or a command needs, built once by :func:`app.services.build_state`."""

    config: Config
    db: Database
    # What runs inside the ingest transaction for each new activity, in order.
    pipeline: Pipeline
    # The validated routes file (empty without NINJAHOOK_ROUTES).
    routes: RoutesConfig
    # Counters buffered in memory and flushed to the database.
    metrics: CounterBuffer
    # What holds a notification back (silences, maintenance): at ingest and for the
    # delivery worker's reminders alike. None: nothing does.
    suppress: Suppress | None = None
    drift: DriftLog = field(default_factory=DriftLog)
    # This process's group committer: made by the first delivery, in the serving process
    # (a forked worker must not inherit its parent's thread), under ``committer_lock``.
    committer: GroupCommitter | None = None
    committer_lock: threading.Lock = field(default_factory=threading.Lock)
