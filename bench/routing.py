"""(c2) ninjahook with a realistic routes file: 50 routes (most for other organizations,
a few that take every bench activity with wait, repeat, flapping and grouping) and three
silences, so `make bench` shows what routing adds to ingest next to (c), which has none.

Only the outbox row is written in the ingest transaction; the delivery worker is off
(NINJAHOOK_DELIVERY_WORKER=off), so the figure is ingest's alone.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.servers import ROOT, VENV_BIN, Server

ROUTES = 50
# The bench activity's condition (bench/load.py): one silence matches it.
BENCH_CONDITION = "0c7ed5a2-4c28-4e9c-8b43-8d4d3b0f2f11"


def routes_file(directory: Path) -> Path:
    """Write the routes file: ROUTES routes, four of which match the bench activity."""
    lines = [
        "destinations:",
        # Never reached: the delivery worker is off during the run.
        "  noc: {kind: webhook, url: 'http://127.0.0.1:9/hook'}",
        "routes:",
        "  - {name: waits, match: {activityType: [CONDITION], minSeverity: MAJOR},"
        " destinations: [noc], wait: 5m}",
        "  - {name: grouped, match: {activityType: [CONDITION]}, destinations: [noc],"
        " group_by: [organization], group_wait: 30s}",
        "  - {name: reminded, match: {activityType: [CONDITION]}, destinations: [noc],"
        " repeat: 4h, flapping: {threshold: 5, window: 1h, calm: 30m}}",
        "  - {name: disks, match: {sourceName: '^Disk'}, destinations: [noc]}",
    ]
    for n in range(ROUTES - 4):
        lines.append(
            f"  - {{name: org-{n}, match: {{organization: [{100 + n}], minSeverity: MINOR}},"
            f" destinations: [noc], group_by: [location], group_wait: 1m}}"
        )
    path = directory / "bench-routes.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def with_routes(server: Server, directory: Path) -> Server:
    """``server`` (migrated, not started) with the routes file and three silences: one
    for another device, one for another organization, one for the bench condition."""
    server.env["NINJAHOOK_ROUTES"] = str(routes_file(directory))
    server.env["NINJAHOOK_DELIVERY_WORKER"] = "off"
    for matcher in (
        ["--device", "999999"],
        ["--organization", "8"],
        ["--condition", BENCH_CONDITION],
    ):
        subprocess.run(
            [
                str(VENV_BIN / "ninjahook"),
                "silence",
                "add",
                *matcher,
                "--duration",
                "1d",
                "--comment",
                "bench",
            ],
            env=server.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    return server
