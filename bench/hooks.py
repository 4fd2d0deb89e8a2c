"""What the ingest hooks cost per delivery, measured in-process on SQLite and PostgreSQL.

``python -m bench.hooks [--activities N] [--postgres URL]`` calls
``ingest_activity`` directly (no HTTP, no validation) over NinjaOne-shaped CONDITION
deliveries with distinct ids, a few hundred alert series cycling through
TRIGGERED → ACKNOWLEDGED → RESET, and a hundred devices across a few organizations
and locations, some of it late (older activityTime than the alert's latest). It
runs the same deliveries with no hooks, each hook alone, and every hook as shipped,
each on a fresh database, and prints CPU (``time.process_time``, this process only:
the PostgreSQL server's own work is not in it) and wall time per delivery.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.support import condition_activity

STATUSES = ("TRIGGERED", "TRIGGERED", "ACKNOWLEDGED", "TRIGGERED", "RESET")
BASE_TIME = 1764300000.0


def deliveries(count: int, *, seed: int = 5) -> list[tuple[bytes, dict[str, Any]]]:
    """``count`` (raw body, payload) pairs; about 5% arrive out of order for their alert."""
    rng = random.Random(seed)
    series = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(300)]
    steps = dict.fromkeys(series, 0)
    out = []
    for activity_id in range(1, count + 1):
        uid = rng.choice(series)
        step = steps[uid]
        steps[uid] += 1
        device = 1000 + series.index(uid) % 100
        when = BASE_TIME + activity_id
        if rng.random() < 0.05:
            when -= rng.randint(1, 500)  # late: the alert has seen newer activities
        payload = condition_activity(
            activity_id,
            status=STATUSES[step % len(STATUSES)],
            series_uid=uid,
            device_id=device,
            organization_id=device % 7,
            location_id=device % 23,
            activity_time=when,
        )
        # The device's own state moves on over time; the names stay.
        payload["device"]["lastContact"] = when - 5
        out.append((json.dumps(payload).encode(), payload))
    return out


@contextmanager
def _postgres_database(admin_url: str) -> Iterator[str]:
    from app.storage.db import normalize_url

    name = f"ninjahook_bench_hooks_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(normalize_url(admin_url, Path(".")), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _run(
    database_url: str,
    instance: Path,
    keep: Callable[[list[Any]], list[Any]],
    batch: list[tuple[bytes, dict[str, Any]]],
) -> tuple[float, float]:
    """(CPU ms, wall ms) per delivery for ``batch`` with the hooks ``keep`` selects."""
    from app.ingest.service import ingest_activity
    from app.web.factory import create_app

    app = create_app(
        {
            "instance_path": str(instance),
            "database_url": database_url,
            "webhook_tokens": "whk_bench_token_0123456789abcdef",
            "background_tasks": "0",
        }
    )
    state = app.app.extensions["ninjahook"]
    state.db.migrate()
    state.pipeline.stages[:] = keep(list(state.pipeline.stages))
    warm = 50
    for raw, payload in batch[:warm]:
        ingest_activity(state, raw, payload)
    cpu, wall = time.process_time(), time.perf_counter()
    for raw, payload in batch[warm:]:
        ingest_activity(state, raw, payload)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    state.db.dispose()
    timed = len(batch) - warm
    return 1000 * cpu / timed, 1000 * wall / timed


def _variants() -> list[tuple[str, Callable[[list[Any]], list[Any]]]]:
    def only(name: str) -> Callable[[list[Any]], list[Any]]:
        return lambda stages: [s for s in stages if s.name == name]

    return [
        ("store the activity (no hooks)", lambda hooks: []),
        ("+ entities stage only", only("entities")),
        ("+ alerts stage only", only("alerts")),
        ("every hook, as shipped", lambda hooks: hooks),
    ]


def measure(backend: str, database_url: str | None, activities: int) -> None:
    """Print one table of per-delivery costs for one backend."""
    batch = deliveries(activities)
    print(f"\n{backend}: {activities} deliveries per row (first 50 untimed)")
    print(f"| {'ingest_activity':<32} | CPU ms | wall ms |")
    print(f"|{'-' * 34}|-------:|--------:|")
    for name, keep in _variants():
        with tempfile.TemporaryDirectory(prefix="ninjahook-bench-hooks-") as tmp:
            instance = Path(tmp)
            if database_url is None:
                cpu, wall = _run("", instance, keep, batch)
            else:
                with _postgres_database(database_url) as url:
                    cpu, wall = _run(url, instance, keep, batch)
        print(f"| {name:<32} | {cpu:6.3f} | {wall:7.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hooks", description=__doc__)
    parser.add_argument("--activities", type=int, default=3000, help="deliveries per row")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("NINJAHOOK_TEST_DATABASE_URL", ""),
        help="admin URL of a PostgreSQL server to measure too (a scratch database is "
        "created and dropped); default $NINJAHOOK_TEST_DATABASE_URL",
    )
    args = parser.parse_args()
    measure("SQLite (synchronous=NORMAL)", None, args.activities)
    if args.postgres:
        measure("PostgreSQL", args.postgres, args.activities)


if __name__ == "__main__":
    main()
