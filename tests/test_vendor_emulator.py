"""The four incident and SIEM kinds end to end, fed by the NinjaOne emulator: its
triggers and resets reach ninjahook as webhooks (configured with `ninjahook
configure`), go through the outbox, survive an outage of every destination and
`deliveries retry`, and leave PagerDuty and Opsgenie with exactly one incident per
alert (resolved once its reset came) and the SIEM stand-ins with every activity once,
in order per device."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.ninjaone.emulator import Emulator
from app.notifications.reads import retry_dead_letters
from app.storage import notifications as store
from tests.support import (
    FAST_DELIVERY,
    LiveServer,
    free_port,
    ninjaone_env,
    run_cli,
    settle_deliveries,
)
from tests.support.vendor_fakes import HecFake, OpsgenieFake, PagerDutyFake, SyslogListener

ROUTES = """\
destinations:
  pd:
    kind: pagerduty
    url: {pd}
    routing_key_env: PD_KEY
  og:
    kind: opsgenie
    url: {og}
    api_key_env: OG_KEY
  hec:
    kind: splunk_hec
    url: {hec}
    token_env: HEC_TOKEN
    sourcetype: "ninjaone:activity"
  siem:
    kind: syslog
    url: {syslog}
routes:
  - name: on-call
    match:
      activityType: [CONDITION]
      statusCode: [TRIGGERED]
    notify_resolved_late: true
    destinations: [pd, og]
  - name: mirror
    once_per_alert: false
    destinations: [hec, siem]
"""


def test_emulated_triggers_and_resets_end_as_one_incident_per_alert(
    make_app: Callable[..., Any],
    settings: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pd, og, hec = PagerDutyFake().start(), OpsgenieFake().start(), HecFake().start()
    syslog = SyslogListener("tcp").start()
    monkeypatch.setenv("PD_KEY", pd.routing_key)
    monkeypatch.setenv("OG_KEY", og.api_key)
    monkeypatch.setenv("HEC_TOKEN", hec.token)
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.format(pd=pd.url, og=og.url, hec=hec.url, syslog=syslog.url))
    app = make_app(routes_file=str(routes), **{**FAST_DELIVERY, "delivery_timeout": "1"})
    state = app.app.extensions["ninjahook"]
    port = free_port()
    server = LiveServer(app, port=port).start()
    fakes = (pd, og, hec)
    try:
        with Emulator(seed=5) as emu:
            configured = run_cli(
                ["configure", "--url", f"http://127.0.0.1:{port}", "--allow-http"]
                + ["--expand", "device,organization,location"]
                + [
                    f"--activity={t}" for t in ("CONDITION", "SYSTEM", "ACTION", "PATCH_MANAGEMENT")
                ],
                ninjaone_env(emu, settings),
            )
            assert configured.exit_code == 0, configured.output
            produced = emu.produce(30)
            settle_deliveries(state)
            # Every destination is down: deliveries fail, are retried, end as dead letters.
            for fake in fakes:
                fake.down = True
            produced += emu.produce(20)
            settle_deliveries(state, timeout=120)
            with state.db.connect() as conn:
                dead = store.list_notifications(
                    conn, store.NotificationFilter(statuses=(store.DEAD,)), limit=1000
                )
            assert {r.destination for r in dead} == {"pd", "og", "hec"}
            # Back up: `deliveries retry`, then more triggers and resets.
            for fake in fakes:
                fake.down = False
            assert retry_dead_letters(state.db, store.NotificationFilter()) == len(dead)
            settle_deliveries(state)
            produced += emu.produce(30)
            settle_deliveries(state)
            assert {d.outcome for d in emu.deliveries} == {"delivered"}
    finally:
        server.stop()
        for fake in fakes:
            fake.stop()
        syslog.stop()

    conditions = [a for a in produced if a["activityType"] == "CONDITION"]
    triggered = {a["seriesUid"] for a in conditions if a["statusCode"] == "TRIGGERED"}
    reset = {a["seriesUid"] for a in conditions if a["statusCode"] == "RESET"}
    assert triggered and reset and reset <= triggered and triggered - reset
    assert pd.state() == {key: ["resolved" if key in reset else "triggered"] for key in triggered}
    assert og.state() == {key: ["closed" if key in reset else "open"] for key in triggered}
    assert og.failed == []

    order = [a["id"] for a in produced]
    by_device: dict[Any, list[int]] = {}
    for activity in produced:
        by_device.setdefault(activity.get("deviceId"), []).append(activity["id"])
    lines = syslog.wait_for(len(produced))
    assert syslog.errors == []
    for received in (
        [e["event"]["id"] for e in hec.events],
        [int(line["sd"]["ninjahook@32473"]["id"]) for line in lines],
    ):
        assert sorted(received) == sorted(order)  # every activity, once
        for device, mine in by_device.items():
            assert [i for i in received if i in mine] == mine, device
