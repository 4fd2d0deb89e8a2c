"""bench/cache_maintenance.py's parts: its load is unexpanded deliveries each naming a new
device, its emulator answers every device, and its verdict reads the medians."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from app.ninjaone.client import Credentials, NinjaOneClient
from bench import cache_maintenance, load
from tests.support import API_HEADERS, INGEST_PATH, WEBHOOK_HEADERS


def test_each_delivery_is_unexpanded_and_names_a_device_of_its_own(client: Any) -> None:
    template = cache_maintenance.unexpanded_template()
    ids = [cache_maintenance.TIMED_ID_BASE + n for n in (1, 2, 10**8 + 1)]
    for activity_id in ids:
        payload = json.loads(load.render(template, activity_id))
        assert payload["id"] == payload["deviceId"] == activity_id
        assert "device" not in payload and "organization" not in payload
        assert payload["deviceId"] < 2**31  # NinjaOne's int32 deviceId
        r = client.post(
            INGEST_PATH, content=load.render(template, activity_id), headers=WEBHOOK_HEADERS
        )
        assert r.status_code == 200, r.text
    stored = client.get("/activities", headers=API_HEADERS).json()["items"]
    assert sorted(a["deviceId"] for a in stored) == ids


@pytest.fixture
def emulator_port() -> Iterator[int]:
    proc, port = cache_maintenance._start_emulator(lambda _message: None)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_emulator_answers_any_device_with_its_organization_and_location(
    emulator_port: int,
) -> None:
    client_id, secret = cache_maintenance.EMULATOR_CLIENT
    with NinjaOneClient(Credentials(f"http://127.0.0.1:{emulator_port}", client_id, secret)) as c:
        first = c.device(1_000_000_123)
        second = c.device(1_000_000_124)
        assert first is not None and second is not None
        assert (first["id"], first["displayName"]) == (1_000_000_123, "BENCH-1000000123")
        for device in (first, second):
            org = c.organization(device["organizationId"])
            assert org is not None
            locations = c.organization_locations(device["organizationId"])
            assert locations is not None
            assert device["locationId"] in {loc["id"] for loc in locations}
        assert c.device(0) is None  # not a device id: 404, as NinjaOne answers


def run(maintenance: str, rps: float, cpu: float = 1.0) -> cache_maintenance.Run:
    result = load.LoadResult("wrk", 10.0, int(rps * 10), 0, rps, 5.0, 50.0)
    return cache_maintenance.Run(maintenance, result, cpu, 100 if maintenance == "on" else 0)


def section(off: list[float], on: list[float]) -> str:
    runs = {"off": [run("off", x) for x in off], "on": [run("on", x, 1.1) for x in on]}
    return cache_maintenance.markdown(
        runs, workers=2, seconds=10, warmup=3, connections=16, generator="wrk"
    )


def test_the_verdict_compares_median_throughputs() -> None:
    within = section(off=[1000, 700, 1010], on=[960, 1200, 100])
    assert within.startswith("### Cache maintenance\n")
    assert "| off | 1,000, 700, 1,010 | 1,000 |" in within
    assert "req/s 0.960 (target: within 5%, ≥ 0.95: **within**)" in within
    assert "CPU per request 1.100" in within
    assert "| on | 960, 1,200, 100 | 960 | 50.0 | 1.10 | 100, 100, 100 |" in within
    outside = section(off=[1000, 1000, 1000], on=[940, 990, 900])
    assert "req/s 0.940 (target: within 5%, ≥ 0.95: **not within**)" in outside
