"""Chart benchmark: the dashboard's two charts on a large generated table.

Fills a database with bench/query.py's N activities (default 1,000,000, a year of
activity ending at ``T_END``), gives the CONDITION ones a few thousand alert series
(so alerts open and close over the year), folds the alerts with ``alerts rebuild``'s
code, then times the series each chart draws through
:func:`app.activities.charts.activity_rate` and :func:`app.alerts.charts.open_alerts`
(the SQL and the Python that turns rows into series; the SVG is drawn from those).

Run alone: ``python -m bench.charts [--rows N] [--database-url URL ...]``; like
bench.query it uses a fresh SQLite file, plus a throwaway PostgreSQL database when
NINJAHOOK_TEST_DATABASE_URL is set. Results go into BENCHMARKS.md under "## Charts".
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from app.activities.charts import RATE_HOURS, activity_rate
from app.alerts.charts import OPEN_HOURS, open_alerts
from app.alerts.service import rebuild
from app.config import load_config
from app.services import build_state
from app.storage.db import Database, normalize_url, redact_url
from app.storage.retention import optimize
from app.storage.tables import activities
from bench.query import T_END, _throwaway_postgres, generate

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
HEADING = "## Charts"
TARGET_MS = 100.0
# CONDITION activities share this many alerts (a device's policy condition): about one
# TRIGGERED, RESET or ACKNOWLEDGED per alert a week at 1,000,000 activities a year.
ALERT_SERIES = 5_000
# Also timed: windows this many times as long, standing for a site this many times busier.
BUSIER = 10


def give_alerts_history(db: Database) -> tuple[int, int]:
    """Spread the CONDITION activities over :data:`ALERT_SERIES` alerts and fold them as
    ``ninjahook alerts rebuild`` does; returns (alerts, links)."""
    series = sa.literal("bench-alert-") + sa.cast(activities.c.device_id % ALERT_SERIES, sa.Text)
    with db.begin() as conn:
        conn.execute(
            sa.update(activities)
            .where(activities.c.activity_type == "CONDITION")
            .values(series_uid=series)
        )
    with db.begin() as conn:
        made = rebuild(conn)
        optimize(conn, analyze=True)
    if db.is_postgresql:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE activities")
            conn.exec_driver_sql("VACUUM ANALYZE alerts")
            conn.exec_driver_sql("VACUUM ANALYZE alert_activities")
    return made


def _timed(call: Callable[[], Any], repeat: int) -> dict[str, float]:
    call()  # warm-up
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[max(0, int(len(samples) * 0.95) - 1)], 2),
    }


def time_charts(db: Database, repeat: int = 15) -> dict[str, Any]:
    """Median and p95 milliseconds of each chart's series, at the end of the generated
    year, and what they hold."""
    state = build_state(load_config({}), db)
    rate = activity_rate(state, now=T_END)
    opened = open_alerts(state, now=T_END)
    busy_rate, busy_open = RATE_HOURS * BUSIER, OPEN_HOURS * BUSIER
    return {
        "rate": _timed(lambda: activity_rate(state, now=T_END), repeat),
        "open": _timed(lambda: open_alerts(state, now=T_END), repeat),
        # A window BUSIER times as long holds the rows a site BUSIER times as busy has in
        # the real one (the cost follows the rows in the window, not the hours).
        "rate_busy": _timed(lambda: activity_rate(state, now=T_END, hours=busy_rate), repeat),
        "open_busy": _timed(lambda: open_alerts(state, now=T_END, hours=busy_open), repeat),
        "rate_activities": sum(rate.totals()),
        "open_now": opened.totals()[-1],
        "open_peak": max(opened.totals()),
    }


def run(database_url: str, rows: int, *, repeat: int = 15, quiet: bool = False) -> dict[str, Any]:
    """Migrate ``database_url`` (it must be empty), generate ``rows`` activities and their
    alerts, time both charts; returns the figures."""
    db = Database(normalize_url(database_url, Path(".")))
    try:
        db.migrate()

        def progress(done: int) -> None:
            if not quiet and (done % 200_000 == 0 or done == rows):
                print(f"  {db.engine.dialect.name}: generated {done:,}/{rows:,}", file=sys.stderr)

        generated = generate(db, rows, progress)
        started = time.perf_counter()
        alerts, links = give_alerts_history(db)
        return {
            "backend": db.engine.dialect.name,
            "database": redact_url(db.url),
            "rows": rows,
            "generate_seconds": round(generated + time.perf_counter() - started, 1),
            "alerts": alerts,
            "links": links,
            **time_charts(db, repeat),
        }
    finally:
        db.dispose()


def markdown(results: list[dict[str, Any]]) -> str:
    """The "## Charts" section for BENCHMARKS.md."""

    def cell(figures: dict[str, float]) -> str:
        mark = "" if figures["median_ms"] < TARGET_MS else " ⚠"
        return f"{figures['median_ms']:.1f} / {figures['p95_ms']:.1f}{mark}"

    first = results[0]
    lines = [
        HEADING,
        "",
        "The dashboard's two charts, the series each draws computed through "
        "`app.activities.charts.activity_rate` and `app.alerts.charts.open_alerts` (SQL and "
        f"the Python that makes the series) on {first['rows']:,} generated activities (a "
        f"year of them, bench/query.py's) whose CONDITION ones make {first['alerts']:,} "
        f"alerts of {first['links']:,} activities (`python -m bench.charts`). Median / p95 "
        f"of 15 runs after a warm-up, milliseconds. Target: under {TARGET_MS:.0f} ms.",
        "",
        f"Machine: {os.cpu_count()} CPUs, shared; {time.strftime('%Y-%m-%d', time.gmtime())}.",
        "",
        "| chart | " + " | ".join(f"{r['backend']} median / p95" for r in results) + " |",
        "|---|" + "---|" * len(results),
        f"| activities per hour by activityType, last {RATE_HOURS} h | "
        + " | ".join(cell(r["rate"]) for r in results)
        + " |",
        f"| open alerts by severity, hourly over {OPEN_HOURS // 24} days | "
        + " | ".join(cell(r["open"]) for r in results)
        + " |",
        f"| the same over {RATE_HOURS * BUSIER} h: the activities of 48 h at {BUSIER}x the rate | "
        + " | ".join(cell(r["rate_busy"]) for r in results)
        + " |",
        f"| the same over {OPEN_HOURS * BUSIER // 24} days: the alert changes of a week at "
        f"{BUSIER}x the rate | " + " | ".join(cell(r["open_busy"]) for r in results) + " |",
        "",
        "What they hold: "
        + "; ".join(
            f"{r['backend']}: {r['rate_activities']:,} activities in the {RATE_HOURS} h, "
            f"{r['open_now']:,} alerts open now (at most {r['open_peak']:,} in the week)"
            for r in results
        )
        + ". Generation and `alerts rebuild`: "
        + ", ".join(f"{r['backend']} {r['generate_seconds']} s" for r in results)
        + ".",
        "",
        "Activities per hour is one range on the (activity_time, id) index with a GROUP BY "
        "hour and type, each row read for its type: its cost follows the activities in the "
        "48 hours, not the table (the 480 h row: a site ten times as busy). Open alerts "
        "counts the alerts whose activities all precede the week with one GROUP BY on the "
        "(state, last_activity_time) index, and replays the others, the alerts with an "
        "activity in the week, from their TRIGGERED and RESET links: per alert, the last of "
        "each kind before the week (an index seek each, then the link by primary key) and "
        "those in the week (an index range each). Its cost follows the alerts active in the "
        "week, here about two thirds of them, not the activities stored. The dashboard "
        "computes both when the page loads (not on its 3 s refresh) and caches them for a "
        "minute.",
        "",
    ]
    return "\n".join(lines)


def write_markdown(section: str, path: Path = BENCHMARKS) -> None:
    """Replace (or add) the "## Charts" section of BENCHMARKS.md, leaving the others alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    start = text.find(HEADING + "\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + (text[end + 1 :] if end != -1 else "")
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.charts", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="activities to generate")
    parser.add_argument(
        "--database-url",
        action="append",
        default=[],
        help="an EMPTY database to fill (repeatable). Default: a temporary SQLite file, "
        "plus a throwaway PostgreSQL database when NINJAHOOK_TEST_DATABASE_URL is set.",
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the throwaway database is dropped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cleanups: list[Callable[[], None]] = []
    urls = list(args.database_url)
    with tempfile.TemporaryDirectory(prefix="ninjahook-bench-") as tmp:
        if not urls:
            urls.append(f"sqlite:///{Path(tmp) / 'charts.sqlite3'}")
            admin = os.environ.get("NINJAHOOK_TEST_DATABASE_URL", "")
            if admin:
                url, drop = _throwaway_postgres(admin)
                cleanups.append(drop)
                urls.append(url)
        try:
            results = [run(url, args.rows) for url in urls]
        finally:
            for cleanup in cleanups:
                cleanup()
    section = markdown(results)
    print(section)
    if not args.no_write:
        write_markdown(section)
        print(f"wrote {BENCHMARKS.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
