"""Load on 127.0.0.1: wrk when installed, a Python HTTP/1.1 generator otherwise; the storm.

Every request is a NinjaOne-shaped activity with its own id (and its own seriesUid,
so each is a separate alert, as in a storm of many devices). Both generators keep
connections alive where the server allows it and reconnect where it closes them
(gunicorn's sync workers close after every answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.ninjaone.webhook_config import INGEST_PATH

LUA_SCRIPT = Path(__file__).with_name("post.lua")
ID_MARK = "__ID__"
SERIES_MARK = "__SERIES__"
# Loopback only: the generators refuse any other host.
HOST = "127.0.0.1"


def activity_template(size: int = 1024) -> str:
    """A NinjaOne CONDITION activity with an expanded device, padded to ``size`` bytes.

    ``__ID__`` stands for the id and ``__SERIES__`` for the seriesUid's last 12 digits
    (the id's); :func:`render` and bench/post.lua fill both the same way.
    """
    payload: dict[str, Any] = {
        "id": 0,
        "activityTime": 1764300000.123456789,
        "deviceId": 42,
        "seriesUid": "",
        "activityType": "CONDITION",
        "statusCode": "TRIGGERED",
        "status": "Triggered",
        "severity": "MAJOR",
        "priority": "HIGH",
        "sourceConfigUid": "0c7ed5a2-4c28-4e9c-8b43-8d4d3b0f2f11",
        "sourceName": "Disk Free Space < 10%",
        "subject": "Disk space low",
        "message": "C: has 8% free space (threshold 10%)",
        "type": "Condition",
        "data": {"message": {"code": "condition_disk_free", "params": {"threshold": "10"}}},
        "device": {
            "id": 42,
            "organizationId": 7,
            "locationId": 9,
            "nodeClass": "WINDOWS_SERVER",
            "approvalStatus": "APPROVED",
            "offline": False,
            "displayName": "SRV-042",
            "systemName": "SRV-042",
            "lastContact": 1764299990.5,
            "references": {
                "organization": {"id": 7, "name": "Org 7"},
                "location": {"id": 9, "name": "Site 9"},
            },
        },
    }
    text = json.dumps(payload, separators=(",", ":"))
    text = text.replace('"id":0', f'"id":{ID_MARK}', 1)
    text = text.replace('"seriesUid":""', f'"seriesUid":"00000000-0000-4000-8000-{SERIES_MARK}"')
    filler = size - len(render(text, 10**9))
    if filler > 0:
        text = text.replace(
            '"message":"C: has 8% free space (threshold 10%)"',
            '"message":"C: has 8% free space (threshold 10%)' + " " * filler + '"',
        )
    return text


TIME_MARK = "__TIME__"
STATUS_MARK = "__STATUS__"
# The "one alert" load: every request is an activity of this one alert.
ONE_ALERT_SERIES = "00000000-0000-4000-8000-0000000a1e27"


def one_alert_template(template: str) -> str:
    """``template`` as activities of ONE alert: a fixed seriesUid, ``__TIME__`` for a
    random activityTime and ``__STATUS__`` for TRIGGERED or RESET (a flapping condition
    whose deliveries arrive in random activityTime order)."""
    text = template.replace(f"00000000-0000-4000-8000-{SERIES_MARK}", ONE_ALERT_SERIES)
    text = text.replace('"activityTime":1764300000.123456789', f'"activityTime":{TIME_MARK}')
    return text.replace('"statusCode":"TRIGGERED"', f'"statusCode":"{STATUS_MARK}"')


def render(template: str, activity_id: int) -> bytes:
    """The body for one activity id (with a pseudo-random time and status for
    :func:`one_alert_template`)."""
    mixed = activity_id * 2654435761 % 2**32
    return (
        template.replace(ID_MARK, str(activity_id))
        .replace(SERIES_MARK, f"{activity_id % 10**12:012d}")
        .replace(TIME_MARK, f"{1764300000 + mixed / 1000:.3f}")
        .replace(STATUS_MARK, "TRIGGERED" if mixed % 2 else "RESET")
        .encode()
    )


@dataclass
class LoadResult:
    """What one timed load run measured."""

    generator: str
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int] = field(default_factory=dict)


def wrk_available() -> bool:
    """True when the wrk binary is on PATH."""
    return shutil.which("wrk") is not None


def run_wrk(
    port: int,
    template: str,
    token: str,
    *,
    seconds: float,
    connections: int,
    threads: int = 2,
    id_base: int = 1,
    count: int | None = None,
) -> LoadResult:
    """Drive 127.0.0.1:``port`` with wrk for ``seconds``, or, with ``count``, until
    exactly ``count`` requests were sent and answered; parse its latency report.

    With a count, bench/post.lua sends no request beyond it, and each wrk thread prints
    ``DONE_LINE`` when its share is answered. wrk itself would sleep out its ``-d``
    and divide by that, so it is interrupted (SIGINT, as Ctrl-C) once every thread has
    printed the line: it then reports the time up to that moment, and req/s over it.
    ``COUNT_CAP_SECONDS`` only bounds a stuck run.
    """
    if count:
        threads = max(1, min(threads, count))
        connections = max(connections, threads)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        fh.write(template)
        body_file = fh.name
    env = {
        **os.environ,
        "BENCH_BODY_FILE": body_file,
        "BENCH_PATH": INGEST_PATH,
        "BENCH_TOKEN": token,
        "BENCH_ID_BASE": str(id_base),
        "BENCH_MAX_REQUESTS": str(count or 0),
        "BENCH_THREADS": str(threads),
    }
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{COUNT_CAP_SECONDS if count else max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        f"http://{HOST}:{port}",
    ]
    try:
        if not count:
            out = subprocess.run(
                command, env=env, capture_output=True, text=True, check=True
            ).stdout
        else:
            out = _wrk_until_done(command, env, threads)
    finally:
        os.unlink(body_file)
    result = parse_wrk(out, seconds)
    if count and result.requests != count:
        raise RuntimeError(f"wrk answered {result.requests:,} requests, not {count:,}:\n{out}")
    return result


DONE_LINE = "bench: thread done"


def _wrk_until_done(command: list[str], env: dict[str, str], threads: int) -> str:
    """Run wrk until ``threads`` lines of ``DONE_LINE``, then interrupt it; its output."""
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    lines = []
    done = 0
    for line in proc.stdout:
        lines.append(line)
        if line.strip() == DONE_LINE:
            done += 1
            if done == threads:
                proc.send_signal(signal.SIGINT)
                break
    rest, errors = proc.communicate()
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, command, "".join(lines), errors)
    return "".join(lines) + rest


# A run of ``count`` requests ends when they are answered; this only bounds a stuck one.
COUNT_CAP_SECONDS = 600


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(out: str, seconds: float) -> LoadResult:
    """A :class:`LoadResult` from wrk's ``--latency`` output."""
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not (p50 and p99 and total and rps):
        raise RuntimeError(f"could not read wrk's report:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    requests = int(total.group(1))
    return LoadResult(
        generator="wrk",
        seconds=seconds,
        requests=requests,
        errors=errors,
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
    )


class _Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1 that reconnects when closed."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.head = (
            f"POST {INGEST_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        )
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> int:
        """Send one body; the status code (0 when the connection failed)."""
        for _attempt in range(2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            assert self.reader is not None
            try:
                self.writer.write(
                    (self.head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
                )
                head = await self.reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                continue
            status = int(head.split(b" ", 2)[1])
            lowered = head.lower()
            match = re.search(rb"\r\ncontent-length:\s*(\d+)", lowered)
            if match:
                await self.reader.readexactly(int(match.group(1)))
            if b"\r\nconnection: close" in lowered or not match:
                await self.close()
            return status
        return 0

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def _percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_python(
    port: int,
    template: str,
    token: str,
    *,
    seconds: float,
    connections: int,
    id_base: int = 1,
    count: int | None = None,
) -> LoadResult:
    """The fallback generator: ``connections`` asyncio senders for ``seconds`` (or for
    ``count`` requests, when given)."""

    async def main() -> LoadResult:
        ids = iter(range(id_base, id_base + (count or 10**9)))
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        deadline = time.perf_counter() + seconds

        async def sender() -> None:
            conn = _Connection(port, token)
            try:
                while count or time.perf_counter() < deadline:
                    activity_id = next(ids, None)
                    if activity_id is None:
                        break
                    body = render(template, activity_id)
                    started = time.perf_counter()
                    status = await conn.post(body)
                    latencies.append((time.perf_counter() - started) * 1000)
                    statuses[status] = statuses.get(status, 0) + 1
            finally:
                await conn.close()

        began = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(connections)))
        elapsed = time.perf_counter() - began
        ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
        return LoadResult(
            generator="python",
            seconds=elapsed,
            requests=len(latencies),
            errors=len(latencies) - ok,
            rps=len(latencies) / elapsed,
            p50_ms=_percentile(latencies, 0.50),
            p99_ms=_percentile(latencies, 0.99),
            statuses=statuses,
        )

    return asyncio.run(main())


@dataclass
class StormResult:
    """The alert storm: how long it took and what the senders were told."""

    activities: int
    senders: int
    seconds: float
    statuses: dict[int, int]
    retries: int
    p99_ms: float


def storm(
    port: int,
    template: str,
    token: str,
    *,
    first_id: int,
    count: int,
    senders: int,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 5000,
) -> StormResult:
    """Deliver ``count`` distinct activities from ``senders`` concurrent connections.

    Like NinjaOne, a sender retries a delivery that got no 2xx answer (a 503, a
    dropped connection), up to 5 times, so that the count that lands is what a
    real sender would have achieved.
    """

    async def main() -> StormResult:
        queue: Iterator[int] = iter(range(first_id, first_id + count))
        statuses: dict[int, int] = {}
        latencies: list[float] = []
        retries = 0
        done = 0

        async def sender() -> None:
            nonlocal retries, done
            conn = _Connection(port, token)
            try:
                for activity_id in queue:
                    body = render(template, activity_id)
                    for attempt in range(6):
                        started = time.perf_counter()
                        status = await conn.post(body)
                        latencies.append((time.perf_counter() - started) * 1000)
                        statuses[status] = statuses.get(status, 0) + 1
                        if 200 <= status < 300:
                            break
                        retries += 1
                        await asyncio.sleep(0.05 * (attempt + 1))
                    done += 1
                    if progress is not None and done % progress_every == 0:
                        progress(done)
            finally:
                await conn.close()

        began = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(senders)))
        return StormResult(
            activities=count,
            senders=senders,
            seconds=time.perf_counter() - began,
            statuses=statuses,
            retries=retries,
            p99_ms=_percentile(latencies, 0.99),
        )

    return asyncio.run(main())


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
