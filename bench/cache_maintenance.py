"""Ingest with the entity cache maintenance on against the same run with it off.

The issue's target: the fetches happen outside the ingest path, so ingest with the
cache maintenance **on** (NinjaOne credentials set: misses fetched in the background,
change events, the periodic sync, all through the shared rate limit) stays within 5 %
of ingest with it **off** (no credentials).

:func:`section` runs ninjahook as ``make bench``'s (c) does (gunicorn, SQLite NORMAL,
fresh database each run) under the same load generator, alternately off and on, and
returns the markdown. The load is unexpanded CONDITION deliveries, as a NinjaOne
notification channel sends them, each naming a device of its own (its deviceId is its
activity id): every delivery is a miss, the worst case. NinjaOne is the emulator
(:mod:`app.ninjaone.emulator`) in a process of its own, as NinjaOne would be, answering
every device asked for (with its organization and locations).

``python -m bench.cache_maintenance [--seconds S] [--rounds R] ...`` runs the section
alone and prints it. ``python -m bench.cache_refresh`` measures the same in-process,
per delivery, without HTTP.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import load, servers

TOKEN = "whk_bench_token_" + "0123456789abcdef"
TARGET = 0.05
# Device ids are activity ids: each run's ids start here (a wrk thread takes 10**8 ids
# after its base), so the warm-up's devices are not the timed run's, and every id stays
# within NinjaOne's int32 deviceId.
WARMUP_ID_BASE = 1_000_000
TIMED_ID_BASE = 1_000_000_000
EMULATOR_CLIENT = ("bench-client-id", "bench-client-secret")


def unexpanded_template() -> str:
    """:func:`bench.load.activity_template` without the expanded device, its deviceId the
    activity id (``__ID__``)."""
    text = load.activity_template()
    device = text.index(',"device":{')
    text = text[:device] + "}"  # the device is the payload's last key
    assert '"deviceId":42,' in text
    return text.replace('"deviceId":42,', f'"deviceId":{load.ID_MARK},', 1)


@dataclass
class Run:
    """One server's timed run."""

    maintenance: str  # "off" or "on"
    result: load.LoadResult
    cpu_ms_per_request: float
    fetched: int  # devices the background fetch had cached when the server stopped


def _drive(
    port: int, template: str, *, seconds: float, connections: int, generator: str, id_base: int
) -> load.LoadResult:
    run = load.run_wrk if generator == "wrk" else load.run_python
    return run(port, template, TOKEN, seconds=seconds, connections=connections, id_base=id_base)


def _fetched(database_url: str) -> int:
    from app.storage.db import normalize_url
    from app.storage.tables import devices

    engine = sa.create_engine(normalize_url(database_url, Path(".")))
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(devices)
                    .where(devices.c.refreshed_by == "fetch")
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _measure(
    maintenance: str,
    ninjaone: dict[str, str],
    work: Path,
    round_no: int,
    *,
    workers: int,
    seconds: float,
    warmup: float,
    connections: int,
    generator: str,
    say: Callable[[str], None],
) -> Run:
    instance = work / f"instance-{maintenance}-{round_no}"
    url = f"sqlite:///{instance / 'ninjahook.sqlite3'}"
    server = servers.ninjahook(
        "c",
        f"ninjahook, SQLite NORMAL, cache maintenance {maintenance}",
        workers=workers,
        database_url=url,
        instance=instance,
        token=TOKEN,
        log=work / f"{maintenance}-{round_no}.log",
        extra_env=ninjaone,
    )
    template = unexpanded_template()
    server.start()
    try:
        if warmup > 0:
            _drive(
                server.port,
                template,
                seconds=warmup,
                connections=connections,
                generator=generator,
                id_base=WARMUP_ID_BASE,
            )
        cpu = server.cpu_seconds()
        result = _drive(
            server.port,
            template,
            seconds=seconds,
            connections=connections,
            generator=generator,
            id_base=TIMED_ID_BASE,
        )
        cpu = server.cpu_seconds() - cpu
    finally:
        server.stop()
    run = Run(
        maintenance,
        result,
        1000 * cpu / result.requests if result.requests else float("nan"),
        _fetched(url),
    )
    say(
        f"cache maintenance {maintenance} (round {round_no + 1}): {result.rps:,.0f} req/s, "
        f"p99 {result.p99_ms:.1f} ms, {run.cpu_ms_per_request:.2f} CPU ms/request, "
        f"{result.errors} errors, {run.fetched} devices fetched"
    )
    return run


def _start_emulator(say: Callable[[str], None]) -> tuple[subprocess.Popen[bytes], int]:
    port = servers.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cache_maintenance", "--serve-emulator", str(port)],
        cwd=servers.ROOT,
        env={**os.environ, "PYTHONPATH": str(servers.ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import httpx

    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.post(f"http://127.0.0.1:{port}/ws/oauth/token", timeout=1)
            break
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the NinjaOne emulator did not start") from None
            time.sleep(0.1)
    say(f"NinjaOne emulator on 127.0.0.1:{port} (answers every device)")
    return proc, port


def section(
    *,
    workers: int = 2,
    seconds: float = 10.0,
    warmup: float = 3.0,
    connections: int = 16,
    generator: str = "auto",
    rounds: int = 3,
    say: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> str:
    """Run ninjahook with the cache maintenance off and on, ``rounds`` times each,
    alternately (off first in even rounds, on first in odd ones); the markdown section.

    Each run: a fresh SQLite database, ``warmup`` seconds of untimed load, then
    ``seconds`` timed, every delivery naming a device nobody has seen.
    """
    if generator == "auto":
        generator = "wrk" if load.wrk_available() else "python"
    emulator, port = _start_emulator(say)
    client_id, client_secret = EMULATOR_CLIENT
    settings = {
        "off": {"NINJAONE_BASE_URL": "", "NINJAONE_CLIENT_ID": "", "NINJAONE_CLIENT_SECRET": ""},
        "on": {
            "NINJAONE_BASE_URL": f"http://127.0.0.1:{port}",
            "NINJAONE_CLIENT_ID": client_id,
            "NINJAONE_CLIENT_SECRET": client_secret,
        },
    }
    runs: dict[str, list[Run]] = {"off": [], "on": []}
    try:
        with tempfile.TemporaryDirectory(prefix="ninjahook-bench-cache-") as tmp:
            for round_no in range(rounds):
                order = ("off", "on") if round_no % 2 == 0 else ("on", "off")
                for maintenance in order:
                    runs[maintenance].append(
                        _measure(
                            maintenance,
                            settings[maintenance],
                            Path(tmp),
                            round_no,
                            workers=workers,
                            seconds=seconds,
                            warmup=warmup,
                            connections=connections,
                            generator=generator,
                            say=say,
                        )
                    )
    finally:
        emulator.terminate()
        emulator.wait(10)
    return markdown(
        runs,
        workers=workers,
        seconds=seconds,
        warmup=warmup,
        connections=connections,
        generator=generator,
    )


def markdown(
    runs: dict[str, list[Run]],
    *,
    workers: int,
    seconds: float,
    warmup: float,
    connections: int,
    generator: str,
) -> str:
    """The "### Cache maintenance" section from the runs of :func:`section`."""

    def median(maintenance: str, value: Callable[[Run], float]) -> float:
        return statistics.median(value(r) for r in runs[maintenance])

    rps = {m: median(m, lambda r: r.result.rps) for m in runs}
    cpu = {m: median(m, lambda r: r.cpu_ms_per_request) for m in runs}
    p99 = {m: median(m, lambda r: r.result.p99_ms) for m in runs}
    rps_ratio, cpu_ratio = rps["on"] / rps["off"], cpu["on"] / cpu["off"]
    within = rps_ratio >= 1 - TARGET
    body = len(load.render(unexpanded_template(), TIMED_ID_BASE))
    lines = [
        "### Cache maintenance",
        "",
        "Ingest with the entity cache maintenance on (NinjaOne credentials set: every "
        "unseen device fetched in the background, its organization and locations too, "
        "the periodic sync, at the default NINJAHOOK_NINJAONE_RATE) against the same run "
        "with it off (no credentials). (c)'s server (SQLite NORMAL, gunicorn, "
        f"{workers} workers, a fresh database each run), {generator}, {connections} "
        f"connections, {warmup:g} s warm-up then {seconds:g} s timed; {len(runs['off'])} "
        "runs each, alternately. Each request is an unexpanded CONDITION delivery "
        f"(~{body} bytes, only deviceId, as a notification channel sends it) naming a "
        "device never seen before, so every one is a miss; NinjaOne is the emulator in a "
        "process of its own, answering every device asked for "
        "(`python -m bench.cache_maintenance`).",
        "",
        "| cache maintenance | req/s (runs) | median req/s | median p99 ms "
        "| median CPU ms/request | devices fetched per run |",
        "|---|---|---:|---:|---:|---|",
    ]
    for m in ("off", "on"):
        lines.append(
            f"| {m} | {', '.join(f'{r.result.rps:,.0f}' for r in runs[m])} | {rps[m]:,.0f} "
            f"| {p99[m]:.1f} | {cpu[m]:.2f} | {', '.join(str(r.fetched) for r in runs[m])} |"
        )
    lines += [
        "",
        f"On / off, medians: req/s {rps_ratio:.3f} (target: within {TARGET:.0%}, "
        f"≥ {1 - TARGET:.2f}: " + ("**within**" if within else "**not within**") + "); "
        f"p99 {p99['on'] / p99['off']:.2f}; CPU per request {cpu_ratio:.3f} (all of the "
        "server's processes, so the background fetches and their writes are in it: they "
        "run beside ingest, not in it).",
        "",
    ]
    return "\n".join(lines)


# --- the emulator's process --------------------------------------------------------------


def serve_emulator(port: int) -> None:
    """The emulator on ``port``, knowing every device id it is asked for (each in one of
    its organizations and locations, and listed from then on), until terminated."""
    from app.ninjaone.emulator import Emulator

    emulator = Emulator(port=port, client_id=EMULATOR_CLIENT[0], client_secret=EMULATOR_CLIENT[1])
    world = emulator.world
    template = world.devices[0]

    def any_device(device_id: int) -> dict[str, Any] | None:
        known = next((d for d in world.devices if d["id"] == device_id), None)
        if known is not None or device_id <= 0:
            return known
        location = world.locations[device_id % len(world.locations)]
        device = copy.deepcopy(template)
        device.update(
            id=device_id,
            organizationId=location["organizationId"],
            locationId=location["id"],
            displayName=f"BENCH-{device_id}",
            systemName=f"BENCH-{device_id}",
        )
        # From now on it exists: the device list (a sync) has it too.
        world.devices.append(device)
        return device

    def expanded(device_id: int) -> dict[str, Any] | None:
        device = any_device(device_id)
        if device is None:
            return None
        org = world.organization(device["organizationId"])
        loc = world.location(device["locationId"])
        return {
            **device,
            "references": {
                "organization": {k: org[k] for k in ("id", "name", "description")},
                "location": {k: loc[k] for k in ("id", "name", "description")},
            },
        }

    world.device = any_device  # type: ignore[method-assign]
    world.expanded_device = expanded  # type: ignore[method-assign]
    emulator.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cache_maintenance", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="timed load per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="untimed load before each")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, alternately")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--serve-emulator", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_emulator:
        serve_emulator(args.serve_emulator)
        return 0
    print(
        section(
            workers=args.workers,
            seconds=args.seconds,
            warmup=args.warmup,
            connections=args.connections,
            generator=args.generator,
            rounds=args.rounds,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
