"""The NinjaOne API client against the emulator over loopback: auth, paging, retries, errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.config import load_config
from app.ninjaone.client import (
    REGIONS,
    Credentials,
    NinjaOneAuthError,
    NinjaOneClient,
    NinjaOneError,
    NinjaOneForbidden,
    NinjaOneNotConfigured,
    base_url,
    credentials,
)
from app.ninjaone.emulator import Emulator, Fault
from tests.support import free_port


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(history=45, seed=3) as emu:
        yield emu


class Sleeps(list[float]):
    """Records the waits the client asks for instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(emu: Emulator, sleeps: Sleeps | None = None, **kwargs: Any) -> NinjaOneClient:
    creds = Credentials(emu.url, emu.client_id, emu.client_secret)
    return NinjaOneClient(creds, sleep=sleeps if sleeps is not None else Sleeps(), **kwargs)


def test_token_is_fetched_once_and_cached(emulator: Emulator) -> None:
    before = emulator.token_requests
    with make_client(emulator) as client:
        client.get_json("/v2/organizations")
        client.get_json("/v2/locations")
        client.get_json("/v2/devices")
    assert emulator.token_requests - before == 1


def test_token_is_renewed_when_it_expires() -> None:
    # NinjaOne's expires_in minus the safety margin is <= 0: every call needs a new token.
    with Emulator(token_lifetime=1) as emu, make_client(emu) as client:
        client.get_json("/v2/organizations")
        client.get_json("/v2/organizations")
        assert emu.token_requests == 2


def test_revoked_token_is_replaced_once(emulator: Emulator) -> None:
    with make_client(emulator) as client:
        client.get_json("/v2/organizations")
        emulator.revoke_tokens()
        before = emulator.token_requests
        assert len(client.get_json("/v2/organizations")) == 3
        assert emulator.token_requests - before == 1


def test_entity_pagination_follows_the_after_cursor(emulator: Emulator) -> None:
    with make_client(emulator) as client:
        pages = list(client.devices(page_size=7))
    ids = [d["id"] for page in pages for d in page]
    assert ids == sorted(d["id"] for d in emulator.world.devices)
    assert [len(p) for p in pages][:-1] == [7] * (len(pages) - 1)
    assert any("after=" in r for r in emulator.api_requests)


def test_activity_pagination_walks_back_with_older_than(emulator: Emulator) -> None:
    with make_client(emulator) as client:
        pages = list(client.activities(page_size=10))
        newest_ten = list(client.activities(newer_than=emulator.activity_ids[-11], page_size=10))
    ids = [a["id"] for page in pages for a in page]
    assert sorted(ids) == emulator.activity_ids
    assert ids == sorted(ids, reverse=True)
    assert [a["id"] for page in newest_ten for a in page] == emulator.activity_ids[:-11:-1]


def test_activities_since_stops_at_that_time(emulator: Emulator) -> None:
    cutoff = emulator.activities[20]["activityTime"]
    with make_client(emulator) as client:
        ids = [a["id"] for page in client.activities(since=cutoff, page_size=10) for a in page]
    assert sorted(ids) == [a["id"] for a in emulator.activities if a["activityTime"] >= cutoff]


def test_429_and_5xx_are_retried_honouring_retry_after(emulator: Emulator) -> None:
    sleeps = Sleeps()
    with make_client(emulator, sleeps, backoff=0.25) as client:
        client.get_json("/v2/organizations")  # token first: faults hit the API call
        emulator.inject(Fault(429, retry_after="7"), Fault(503), Fault(502, retry_after="0"))
        assert len(client.get_json("/v2/organizations")) == 3
    assert sleeps == [7.0, 0.5, 0.0]


def test_retry_after_is_capped(emulator: Emulator) -> None:
    sleeps = Sleeps()
    with make_client(emulator, sleeps, max_backoff=5) as client:
        client.get_json("/v2/organizations")
        emulator.inject(Fault(429, retry_after="3600"))
        client.get_json("/v2/organizations")
    assert sleeps == [5.0]


def test_persistent_5xx_ends_in_one_clear_error(emulator: Emulator) -> None:
    with make_client(emulator, max_retries=2) as client:
        client.get_json("/v2/organizations")
        emulator.inject(*[Fault(500)] * 3)
        with pytest.raises(NinjaOneError, match=r"GET /v2/organizations: .*500 after 3 attempt"):
            client.get_json("/v2/organizations")


def test_wrong_credentials_name_the_settings_and_hide_the_secret(emulator: Emulator) -> None:
    creds = Credentials(emulator.url, emulator.client_id, "wrong-secret-value-123")
    with NinjaOneClient(creds) as client, pytest.raises(NinjaOneAuthError) as info:
        client.get_json("/v2/organizations")
    message = str(info.value)
    assert "invalid_client" in message and "NINJAONE_CLIENT_SECRET" in message
    assert "wrong-secret-value-123" not in message and "\n" not in message
    assert "wrong-secret-value-123" not in repr(creds)


def test_403_on_webhook_says_system_administrator_rights_are_needed() -> None:
    with (
        Emulator(webhook_forbidden=True) as emu,
        make_client(emu) as client,
        pytest.raises(NinjaOneForbidden, match="system administrators"),
    ):
        client.configure_webhook({"url": "https://example.com/hook"})


def test_403_elsewhere_names_the_missing_permission(emulator: Emulator) -> None:
    with make_client(emulator) as client:
        client.get_json("/v2/devices")
        emulator.inject(Fault(403))
        with pytest.raises(NinjaOneForbidden, match=r"GET /v2/devices: .*lacks permission"):
            client.get_json("/v2/devices")


def test_non_json_answer_is_a_clear_error(emulator: Emulator) -> None:
    with make_client(emulator) as client:
        client.get_json("/v2/devices")
        emulator.inject(Fault(200, "<html>maintenance</html>", "text/html"))
        with pytest.raises(NinjaOneError, match=r"non-JSON \(text/html\)"):
            client.get_json("/v2/devices")


def test_unreachable_host_is_retried_then_reported() -> None:
    sleeps = Sleeps()
    creds = Credentials(f"http://127.0.0.1:{free_port()}", "id", "secret")
    with (
        NinjaOneClient(creds, sleep=sleeps, max_retries=2) as client,
        pytest.raises(NinjaOneError, match=r"cannot connect .* after 3 attempt"),
    ):
        client.get_json("/v2/devices")
    assert sleeps == [0.5, 1.0]


def test_timeout_is_reported(emulator: Emulator) -> None:
    with make_client(emulator, timeout=0.2, max_retries=0) as client:
        client.get_json("/v2/devices")
        emulator.inject(Fault(200, "[]", delay=1.0))
        with pytest.raises(NinjaOneError, match=r"GET .*/api/v2/devices: timed out"):
            client.get_json("/v2/devices")


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_regions_map_to_ninjarmm_hosts(region: str) -> None:
    assert base_url(load_config({"ninjaone_region": region})) == f"https://{region}.ninjarmm.com"


def test_base_url_overrides_the_region() -> None:
    config = load_config({"ninjaone_region": "eu", "ninjaone_base_url": "https://x.example/"})
    assert base_url(config) == "https://x.example"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, "set NINJAONE_REGION"),
        ({"ninjaone_region": "mars"}, "NINJAONE_REGION: expected one of app, us2, eu, ca, oc"),
        ({"ninjaone_base_url": "ftp://x"}, "NINJAONE_BASE_URL: expected an http"),
        ({"ninjaone_region": "eu", "ninjaone_client_id": "x"}, "set NINJAONE_CLIENT_SECRET"),
    ],
)
def test_incomplete_settings_name_the_variable(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(NinjaOneNotConfigured, match=message):
        credentials(load_config(overrides))
