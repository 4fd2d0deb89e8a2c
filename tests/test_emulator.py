"""The NinjaOne emulator: NinjaOne's shapes, realistic streams, and deliveries like NinjaOne's."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from app.ninjaone.client import Credentials, NinjaOneClient
from app.ninjaone.emulator import Emulator
from tests.support import ROOT, DestinationServer, free_port, load_reference

REFERENCE = load_reference("ninjaone-api-v2-subset.json")["components"]["schemas"]


NINJAHOOK = str(Path(sys.executable).with_name("ninjahook"))


VALIDATORS = {name: jsonschema.Draft7Validator(schema) for name, schema in REFERENCE.items()}


def check(instance: Any, schema_name: str) -> None:
    VALIDATORS[schema_name].validate(instance)


@pytest.fixture
def destination() -> Iterator[DestinationServer]:
    server = DestinationServer().start()
    yield server
    server.stop()


def client_for(emu: Emulator) -> NinjaOneClient:
    return NinjaOneClient(Credentials(emu.url, emu.client_id, emu.client_secret))


def test_api_answers_have_ninjaones_shapes() -> None:
    with Emulator(history=30) as emu, client_for(emu) as client:
        for path, schema in (
            ("/v2/organizations", "Organization"),
            ("/v2/locations", "LocationWithOrganizationRef"),
            ("/v2/devices", "Device"),
        ):
            items = client.get_json(path)
            assert items
            for item in items:
                check(item, schema)
        page = client.get_json("/v2/activities", {"pageSize": 10})
        check(page, "ActivitiesResponse")
        assert page["lastActivityId"] == emu.activity_ids[-1]
        assert [a["id"] for a in page["activities"]] == emu.activity_ids[:-11:-1]


def test_activity_stream_is_realistic() -> None:
    with Emulator(seed=9) as emu:
        stream = emu.produce(300)
    ids = [a["id"] for a in stream]
    assert ids == sorted(set(ids)) and ids[-1] - ids[0] > len(ids)  # growing and sparse
    for activity in stream:
        check(activity, "Activity")
    seen = Counter((a["activityType"], a["statusCode"]) for a in stream)
    for kind in (
        ("CONDITION", "TRIGGERED"),
        ("CONDITION", "RESET"),
        ("ACTION", "START_REQUESTED"),
        ("ACTION", "COMPLETED"),
        ("PATCH_MANAGEMENT", "PATCH_MANAGEMENT_INSTALLED"),
    ):
        assert seen[kind] > 0, kind
    assert (
        seen[("SYSTEM", "NODE_MANUALLY_APPROVED")] + seen[("SYSTEM", "NODE_AUTOMATICALLY_APPROVED")]
        > 0
    )
    triggered = {a["seriesUid"]: a for a in stream if a["statusCode"] == "TRIGGERED"}
    for reset in (a for a in stream if a["statusCode"] == "RESET"):
        trigger = triggered[reset["seriesUid"]]
        assert trigger["id"] < reset["id"] and trigger["deviceId"] == reset["deviceId"]
    # Real deliveries often omit severity and priority.
    assert any("severity" not in a for a in stream if a["activityType"] == "CONDITION")


def test_delivers_with_configured_headers_expansion_and_filter(
    destination: DestinationServer,
) -> None:
    with Emulator(seed=4) as emu, client_for(emu) as client:
        client.configure_webhook(
            {
                "url": destination.url,
                "expand": ["device", "organization"],
                "activities": {"CONDITION": ["TRIGGERED"], "SYSTEM": ["*"]},
                "headers": [
                    {"name": "Authorization", "value": "Bearer abc"},
                    {"name": "X-Tenant", "value": "acme"},
                ],
            }
        )
        produced = emu.produce(60)
    wanted = [
        a for a in produced if a["statusCode"] == "TRIGGERED" or a["activityType"] == "SYSTEM"
    ]
    payloads = destination.payloads()
    assert [p["id"] for p in payloads] == [a["id"] for a in wanted]
    for payload, activity in zip(payloads, wanted, strict=True):
        device = payload.pop("device")
        organization = payload.pop("organization")
        assert payload == activity
        assert device["id"] == activity["deviceId"]
        assert device["references"]["organization"]["id"] == device["organizationId"]
        assert organization["id"] == device["organizationId"] and "name" in organization
        assert "location" not in payload
    for request in destination.requests:
        assert request["headers"]["authorization"] == "Bearer abc"
        assert request["headers"]["x-tenant"] == "acme"
        assert request["headers"]["content-type"] == "application/json"


def test_drops_and_duplicates(destination: DestinationServer) -> None:
    with Emulator(seed=2, drop=0.3, duplicate=0.3) as emu, client_for(emu) as client:
        client.configure_webhook({"url": destination.url})
        produced = emu.produce(60)
    received = Counter(p["id"] for p in destination.payloads())
    dropped = {d.activity_id for d in emu.deliveries if d.outcome == "dropped"}
    assert dropped and not dropped & set(received)
    assert set(received) | dropped == {a["id"] for a in produced}
    assert 2 in received.values() and set(received.values()) <= {1, 2}


def test_webhook_delete_stops_deliveries(destination: DestinationServer) -> None:
    with Emulator() as emu, client_for(emu) as client:
        client.configure_webhook({"url": destination.url})
        emu.produce(2)
        client.disable_webhook()
        emu.produce(2)
    assert len(destination.payloads()) == 2


def test_rate_produces_in_the_background(destination: DestinationServer) -> None:
    with Emulator(rate=50) as emu, client_for(emu) as client:
        client.configure_webhook({"url": destination.url})
        deadline = time.monotonic() + 10
        while len(destination.payloads()) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(destination.payloads()) >= 5


def test_api_requires_a_token_and_checks_page_size() -> None:
    with Emulator() as emu:
        assert httpx.get(f"{emu.url}/api/v2/devices").status_code == 401
        bad = httpx.post(
            f"{emu.url}/ws/oauth/token",
            data={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"},
        )
        assert (bad.status_code, bad.json()) == (401, {"error": "invalid_client"})
        with client_for(emu) as client:
            response = client.http.get(
                "/api/v2/activities",
                params={"pageSize": 5},
                headers={"Authorization": f"Bearer {client.access_token()}"},
            )
        assert response.status_code == 400


def test_emulator_command_serves_until_stopped() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [NINJAHOOK, "emulator", "--port", str(port), "--rate", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        creds = Credentials(
            f"http://127.0.0.1:{port}", "emulator-client-id", "emulator-client-secret"
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with NinjaOneClient(creds, max_retries=0) as client:
                    organizations = client.get_json("/v2/organizations")
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        assert organizations[0]["name"] == "Acme Dental Group"
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=20)
    assert f"export NINJAONE_BASE_URL=http://127.0.0.1:{port}" in err
