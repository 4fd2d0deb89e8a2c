"""The operator role (issue 14): NINJAHOOK_OPERATOR_TOKENS, a third set of tokens that
read and may also silence, acknowledge, reset a condition in NinjaOne and retry; every
action is recorded with who did it and when, and shown on the alert's page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import ConfigError, load_config
from app.ninjaone.emulator.server import Emulator, Fault
from tests.support import (
    API_HEADERS,
    API_TOKEN,
    FAST_DELIVERY,
    WEBHOOK_HEADERS,
    WEBHOOK_TOKEN,
    DestinationServer,
    condition_activity,
    deliver,
    ninjaone_env,
    one_route_file,
    run_cli,
    settle_deliveries,
)
from tests.support.browser import form_csrf

ALICE = "op_alice_token_0123456789abcdef"
BOB = "op_bob_token_0123456789abcdefgh"
OPERATORS = f"alice:{ALICE},bob:{BOB}"
AS_ALICE = {"Authorization": f"Bearer {ALICE}"}
AS_BOB = {"Authorization": f"Bearer {BOB}"}
SERIES = "3f2c9a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(seed=5) as emu:
        yield emu


@pytest.fixture
def operated(make_app: Any, emulator: Emulator) -> Any:
    """The app with two operators and NinjaOne credentials (the emulator)."""
    return make_app(
        operator_tokens=OPERATORS,
        ninjaone_base_url=emulator.url,
        ninjaone_client_id=emulator.client_id,
        ninjaone_client_secret=emulator.client_secret,
    )


def test_operator_tokens_are_a_labelled_set_of_their_own() -> None:
    config = load_config({"operator_tokens": f"alice:{ALICE}, {BOB}"})
    assert config.operator_tokens[0] == ("alice", ALICE)
    label, token = config.operator_tokens[1]
    assert token == BOB
    assert re.fullmatch(r"token-[0-9a-f]{8}", label)
    for shared in ({"api_tokens": ALICE}, {"webhook_tokens": ALICE}):
        with pytest.raises(ConfigError, match="share a token") as raised:
            load_config({"operator_tokens": f"alice:{ALICE}", **shared})
        assert ALICE not in str(raised.value)
    for bad, cause in (
        ("alice:short", "at least 16"),
        (f"al ice:{ALICE}", "label"),
        (f"alice:{ALICE},alice:{BOB}", "same label"),
    ):
        with pytest.raises(ConfigError, match=cause) as raised:
            load_config({"operator_tokens": bad})
        assert "NINJAHOOK_OPERATOR_TOKENS" in str(raised.value)


def test_operators_read_and_readers_cannot_act(operated: Any) -> None:
    with operated.test_client() as client:
        deliver(client, condition_activity(1, series_uid=SERIES))
        assert client.get("/alerts", headers=AS_ALICE).status_code == 200
        assert client.get(f"/alerts/{SERIES}", headers=AS_BOB).status_code == 200
        for headers in (API_HEADERS, WEBHOOK_HEADERS, {}):
            r = client.post(f"/alerts/{SERIES}/acknowledge", headers=headers)
            assert r.status_code == 401
            assert client.post(f"/alerts/{SERIES}/reset", headers=headers).status_code == 401
        # An operator token is no webhook token.
        r = client.post(
            "/webhooks/ninjarmm/activity",
            json=condition_activity(2),
            headers={**AS_ALICE, "Content-Type": "application/json"},
        )
        assert r.status_code == 401
        assert client.get("/operator-actions", headers=API_HEADERS).json()["items"] == []


def test_acknowledging_records_who_and_when_and_the_alert_shows_it(operated: Any) -> None:
    with operated.test_client() as client:
        deliver(client, condition_activity(1, series_uid=SERIES))
        r = client.post(f"/alerts/{SERIES}/acknowledge?comment=looking", headers=AS_ALICE)
        assert r.status_code == 200, r.text
        done = r.json()
        assert (done["actor"], done["action"], done["alertKey"], done["detail"]) == (
            "alice",
            "acknowledge",
            SERIES,
            "looking",
        )
        client.post(f"/alerts/{SERIES}/acknowledge", headers=AS_BOB)
        detail = client.get(f"/alerts/{SERIES}", headers=API_HEADERS).json()
        assert [(a["actor"], a["action"]) for a in detail["operatorActions"]] == [
            ("bob", "acknowledge"),
            ("alice", "acknowledge"),
        ]
        assert detail["operatorActions"][1]["at"] == done["at"]
        assert client.post("/alerts/nope/acknowledge", headers=AS_ALICE).status_code == 404


def test_reset_calls_ninjaone_with_the_series_uid_and_is_recorded(
    operated: Any, emulator: Emulator
) -> None:
    with operated.test_client() as client:
        deliver(client, condition_activity(1, series_uid=SERIES))
        r = client.post(f"/alerts/{SERIES}/reset?comment=fixed", headers=AS_BOB)
        assert r.status_code == 200, r.text
        assert r.json()["actor"] == "bob"
        assert r.json()["detail"] == f"NinjaOne alert {SERIES} reset: fixed"
        assert emulator.alert_resets == [(SERIES, None)]
        assert f"DELETE /api/v2/alert/{SERIES}?" in emulator.api_requests
        # NinjaOne refusing is a 502 that says so, and nothing is recorded.
        emulator.inject(Fault(403, '{"resultCode": "FORBIDDEN"}'))
        refused = client.post(f"/alerts/{SERIES}/reset", headers=AS_ALICE)
        assert refused.status_code == 502
        assert "403" in refused.json()["detail"]
        actions = client.get(f"/alerts/{SERIES}", headers=API_HEADERS).json()["operatorActions"]
        assert [(a["actor"], a["action"]) for a in actions] == [("bob", "reset")]


def test_reset_needs_a_ninjaone_uid_and_credentials(make_app: Any) -> None:
    app = make_app(operator_tokens=OPERATORS)
    with app.test_client() as client:
        deliver(client, condition_activity(1, series_uid=SERIES))
        no_credentials = client.post(f"/alerts/{SERIES}/reset", headers=AS_ALICE)
        assert no_credentials.status_code == 409
        assert "NinjaOne is not configured" in no_credentials.json()["detail"]
        payload = condition_activity(2, device_id=50)
        del payload["seriesUid"]
        deliver(client, payload)
        key = f"50:{payload['sourceConfigUid']}"
        no_uid = client.post(f"/alerts/{key}/reset", headers=AS_ALICE)
        assert no_uid.status_code == 409
        assert "seriesUid" in no_uid.json()["detail"]


def test_an_operator_retries_a_dead_letter(make_app: Any, tmp_path: Path) -> None:
    refusing = DestinationServer("error", status=400).start()
    try:
        app = make_app(
            routes_file=str(one_route_file(tmp_path, refusing.url)),
            operator_tokens=OPERATORS,
            **FAST_DELIVERY,
        )
        state = app.app.extensions["ninjahook"]
        with app.test_client() as client:
            deliver(client, condition_activity(1, series_uid=SERIES))
            settle_deliveries(state)
            (dead,) = client.get("/deliveries?status=dead", headers=API_HEADERS).json()["items"]
            path = f"/deliveries/{dead['id']}/retry"
            assert client.post(path, headers=API_HEADERS).status_code == 401
            r = client.post(path, headers=AS_ALICE)
            assert r.status_code == 200, r.text
            assert (r.json()["action"], r.json()["target"], r.json()["alertKey"]) == (
                "retry",
                dead["id"],
                SERIES,
            )
            settle_deliveries(state)
            assert refusing.ids() == [dead["id"], dead["id"]]  # sent again, same id
            # It is dead again; retrying one that is not dead is a 404.
            assert client.post("/deliveries/nope/retry", headers=AS_ALICE).status_code == 404
        # From the dead-letters page, an operator's retry is recorded under its label.
        with app.test_client() as client:
            _log_in(client, BOB)
            r = client.post(
                "/ui/dead-letters/retry",
                data={"delivery": dead["id"], "csrf": form_csrf(client, "/ui/dead-letters")},
                follow_redirects=False,
            )
            assert r.status_code == 303, r.text
            settle_deliveries(state)
            assert refusing.ids() == [dead["id"]] * 3
            actions = client.get("/operator-actions", headers=API_HEADERS).json()["items"]
            assert [(a["actor"], a["action"]) for a in actions] == [
                ("bob", "retry"),
                ("alice", "retry"),
            ]
    finally:
        refusing.stop()


def _log_in(client: Any, token: str) -> None:
    r = client.post(
        "/login", data={"token": token, "csrf": form_csrf(client)}, follow_redirects=False
    )
    assert r.status_code == 303, r.text


def test_the_dashboard_acts_only_for_operator_sessions(operated: Any, emulator: Emulator) -> None:
    with operated.test_client() as client:
        deliver(client, condition_activity(1, series_uid=SERIES))
        _log_in(client, API_TOKEN)
        page = client.get(f"/ui/alerts/{SERIES}").text
        assert "Reset the condition" not in page
        assert "No operator has acted on this alert." in page
        csrf = form_csrf(client, f"/ui/alerts/{SERIES}")
        r = client.post(
            f"/ui/alerts/{SERIES}/action",
            data={"action": "acknowledge", "csrf": csrf},
            follow_redirects=False,
        )
        assert r.status_code == 401  # a read session may not act
    with operated.test_client() as client:
        _log_in(client, ALICE)
        page = client.get(f"/ui/alerts/{SERIES}").text
        assert "Reset the condition in NinjaOne" in page
        csrf = form_csrf(client, f"/ui/alerts/{SERIES}")
        forged = client.post(
            f"/ui/alerts/{SERIES}/action",
            data={"action": "acknowledge", "csrf": "0" * 64},
            follow_redirects=False,
        )
        assert forged.status_code == 403
        for action in ("acknowledge", "reset"):
            r = client.post(
                f"/ui/alerts/{SERIES}/action",
                data={"action": action, "csrf": csrf},
                follow_redirects=False,
            )
            assert r.status_code == 303, r.text
            assert r.headers["location"] == f"/ui/alerts/{SERIES}"
        assert emulator.alert_resets == [(SERIES, None)]
        bad = client.post(
            f"/ui/alerts/{SERIES}/action",
            data={"action": "silence", "duration": "forever", "comment": "x", "csrf": csrf},
            follow_redirects=False,
        )
        assert bad.status_code == 409
        assert "Not done: duration" in bad.text
        page = client.get(f"/ui/alerts/{SERIES}").text
        actions = re.findall(
            r'<span class="actor">(\w+)</span> <span class="action">([\w-]+)', page
        )
        assert actions == [("alice", "reset"), ("alice", "acknowledge")]
    # An operator logs in with a token that is neither a read nor a webhook token.
    with operated.test_client() as client:
        r = client.post(
            "/login",
            data={"token": WEBHOOK_TOKEN, "csrf": form_csrf(client)},
            follow_redirects=False,
        )
        assert r.status_code == 401


def test_the_cli_resets_an_alert_in_ninjaone(
    operated: Any, emulator: Emulator, settings: dict[str, Any]
) -> None:
    with operated.test_client() as client:
        deliver(client, condition_activity(1, series_uid=SERIES))
    env = ninjaone_env(emulator, settings)
    done = run_cli(["alerts", "reset", SERIES, "--author", "carol", "--comment", "rebooted"], env)
    assert done.exit_code == 0, done.output
    assert f"NinjaOne alert {SERIES} reset: rebooted" in done.output
    assert emulator.alert_resets == [(SERIES, None)]
    with operated.test_client() as client:
        actions = client.get(f"/alerts/{SERIES}", headers=API_HEADERS).json()["operatorActions"]
    assert [(a["actor"], a["action"]) for a in actions] == [("carol", "reset")]
    missing = run_cli(["alerts", "reset", "no-such-alert"], env)
    assert missing.exit_code == 1
    assert "no alert with key 'no-such-alert'" in missing.output
    emulator.inject(Fault(404, '{"resultCode": "NOT_FOUND"}'))
    refused = run_cli(["alerts", "reset", SERIES], env)
    assert refused.exit_code == 1
    assert "alert not reset" in refused.output and "404" in refused.output
