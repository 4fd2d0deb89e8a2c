"""What keeping the entity cache current costs ingest, measured in-process on SQLite.

``python -m bench.cache_refresh [--activities N] [--devices D] [--rounds R] [--rate RPS]``
calls ``ingest_activity`` directly (as :mod:`bench.hooks` does) over unexpanded CONDITION
deliveries naming ``D`` devices the cache has never seen, and SYSTEM change events
(``NODE_UPDATED``) now and then, with the cache maintenance **off** (no NinjaOne
credentials) and **on** (credentials pointing at the NinjaOne emulator, which knows
every device, so each miss is fetched and answered while ingest runs). Rounds alternate
off/on on fresh databases; the table gives the median per-delivery CPU and wall time
and the ratio on/off, and how many fetches the background thread made during the timed
part.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support import condition_activity, minimal_activity

BASE_TIME = 1764300000.0


def deliveries(count: int, device_ids: list[int]) -> list[tuple[bytes, dict[str, Any]]]:
    """Unexpanded deliveries cycling over ``device_ids``; every 50th a NODE_UPDATED."""
    out = []
    for n in range(1, count + 1):
        device_id = device_ids[n % len(device_ids)]
        if n % 50 == 0:
            payload = minimal_activity(
                n, deviceId=device_id, statusCode="NODE_UPDATED", activityTime=BASE_TIME + n
            )
        else:
            payload = condition_activity(
                n, device_id=device_id, activity_time=BASE_TIME + n, expand=False
            )
        out.append((json.dumps(payload).encode(), payload))
    return out


def _run(
    instance: Path, batch: list[tuple[bytes, dict[str, Any]]], ninjaone: dict[str, str]
) -> tuple[float, float, float, int]:
    """(process CPU ms, ingest thread CPU ms, wall ms) per delivery, and the fetches made
    meanwhile. Process CPU includes the background refresher's own work; the ingest
    thread's CPU and the wall time are what ingest itself costs."""
    from app.ingest.service import ingest_activity
    from app.web.factory import create_app

    app = create_app(
        {
            "instance_path": str(instance),
            "database_url": "",
            "webhook_tokens": "whk_bench_token_0123456789abcdef",
            "background_tasks": "0",
            **ninjaone,
        }
    )
    state = app.app.extensions["ninjahook"]
    state.db.migrate()
    warm = 50
    for raw, payload in batch[:warm]:
        ingest_activity(state, raw, payload)
    state.metrics.flush()
    cpu, thread, wall = time.process_time(), time.thread_time(), time.perf_counter()
    for raw, payload in batch[warm:]:
        ingest_activity(state, raw, payload)
    cpu, thread = time.process_time() - cpu, time.thread_time() - thread
    wall = time.perf_counter() - wall
    fetched = _device_fetches(state)
    time.sleep(0.5)  # let an in-flight fetch finish before the database goes
    state.db.dispose()
    timed = len(batch) - warm
    return 1000 * cpu / timed, 1000 * thread / timed, 1000 * wall / timed, fetched


def _device_fetches(state: Any) -> int:
    from app.metrics.service import ENTITY_FETCHES

    state.metrics.flush()
    from app.storage import metrics as store

    with state.db.connect() as conn:
        return int(sum(v for name, labels, v in store.counters(conn) if name == ENTITY_FETCHES))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cache_refresh", description=__doc__)
    parser.add_argument("--activities", type=int, default=3000, help="deliveries per round")
    parser.add_argument("--devices", type=int, default=600, help="distinct unseen devices")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of off and on each")
    parser.add_argument(
        "--rate", default="5", help="NINJAHOOK_NINJAONE_RATE for the 'on' rounds (default 5)"
    )
    parser.add_argument("--serve-emulator", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_emulator:
        serve_emulator(args.serve_emulator, args.devices)
        return

    from app.ninjaone.emulator import Emulator
    from tests.support import free_port

    # The emulator runs in its own process, as NinjaOne would: its work is not ingest's.
    port = free_port()
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.cache_refresh",
            "--serve-emulator",
            str(port),
            "--devices",
            str(args.devices),
        ],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        _wait_for(port)
        emu = Emulator(port=port)  # the same seed: the same credentials and device ids
        device_ids = _device_ids(args.devices)
        batch = deliveries(args.activities, device_ids)
        on = {
            "ninjaone_base_url": f"http://127.0.0.1:{port}",
            "ninjaone_client_id": emu.client_id,
            "ninjaone_client_secret": emu.client_secret,
            "ninjaone_rate": args.rate,
        }
        results: dict[str, list[tuple[float, float, float, int]]] = {"off": [], "on": []}
        for _ in range(args.rounds):
            for name, settings in (("off", {}), ("on", on)):
                with tempfile.TemporaryDirectory(prefix="ninjahook-bench-cache-") as tmp:
                    results[name].append(_run(Path(tmp), batch, settings))
    finally:
        emulator.terminate()
        emulator.wait(10)

    print(
        f"\nSQLite: {args.activities} unexpanded deliveries per round over {args.devices} "
        f"unseen devices (first 50 untimed), {args.rounds} rounds each, alternating; "
        f"'on' at NINJAHOOK_NINJAONE_RATE={args.rate}"
    )
    print(
        "| cache maintenance | process CPU ms | ingest thread CPU ms | wall ms "
        "| fetches during timing |"
    )
    print("|---|--:|--:|--:|--:|")
    medians = {}
    for name, rows in results.items():
        cpu, thread, wall = (statistics.median(r[i] for r in rows) for i in range(3))
        medians[name] = (cpu, thread, wall)
        fetches = ", ".join(str(r[3]) for r in rows)
        print(f"| {name} | {cpu:.4f} | {thread:.4f} | {wall:.4f} | {fetches} |")
    ratios = [medians["on"][i] / medians["off"][i] for i in range(3)]
    print(f"| on / off | {ratios[0]:.3f} | {ratios[1]:.3f} | {ratios[2]:.3f} | |")
    for name in ("off", "on"):
        print(
            f"per-round ({name}): thread CPU "
            + ", ".join(f"{r[1]:.4f}" for r in results[name])
            + "; wall "
            + ", ".join(f"{r[2]:.4f}" for r in results[name])
        )


def _device_ids(count: int) -> list[int]:
    from app.ninjaone.emulator.seed import build_world

    seeded = [d["id"] for d in build_world(1, 0.0).devices]
    return (seeded + [5000 + n for n in range(len(seeded), count)])[:count]


def _wait_for(port: int) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/v2/devices", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the emulator did not start")


def serve_emulator(port: int, devices: int) -> None:
    """The emulator with ``devices`` devices (the seeded ones, then copies), until killed."""
    from app.ninjaone.emulator import Emulator

    emu = Emulator(port=port)
    template = emu.world.devices[0]
    for device_id in _device_ids(devices)[len(emu.world.devices) :]:
        extra = copy.deepcopy(template)
        extra["id"] = device_id
        extra["displayName"] = extra["systemName"] = f"BENCH-{device_id}"
        emu.world.devices.append(extra)
    emu.serve_forever()


if __name__ == "__main__":
    main()
