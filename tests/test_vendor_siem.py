"""Splunk HEC and syslog: every activity once, as one event or one RFC 5424 line, on
stand-ins written from the documentation (HEC's token, framing and answers; a syslog
receiver parsing RFC 5424 over UDP, TCP with octet counting, and TLS)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.notifications.destinations import Envelope
from app.notifications.routes import RoutesError
from app.notifications.vendors import send, splunk_hec
from app.notifications.vendors.syslog import param_value
from tests.support import (
    FAST_DELIVERY,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    condition_activity,
    free_port,
    minimal_activity,
    settle_deliveries,
)
from tests.support.vendor_fakes import (
    HecFake,
    SyslogListener,
    closed_port_url,
    parse_rfc5424,
    vendor_destination,
    vendor_message,
)


@pytest.fixture
def hec() -> Iterator[HecFake]:
    fake = HecFake().start()
    yield fake
    fake.stop()


def hec_destination(fake: HecFake, token: str | None = None, extra: str = "") -> Any:
    return vendor_destination(
        f"{{kind: splunk_hec, url: '{fake.url}', token_env: HEC_TOKEN{extra}}}",
        {"HEC_TOKEN": token or fake.token},
    )


def test_an_activity_is_one_hec_event(hec: HecFake) -> None:
    payload = condition_activity(1, activity_time=1764300000.25)
    destination = hec_destination(
        hec, extra=", source: ninjaone, sourcetype: 'ninjaone:json', index: rmm"
    )
    assert send(destination, vendor_message(payload), Envelope("d"), route="r", timeout=3).ok
    assert hec.requests[0]["headers"]["authorization"] == f"Splunk {hec.token}"
    [event] = hec.events
    assert event == {
        "time": 1764300000.25,
        "host": "SRV-042",
        "source": "ninjaone",
        "sourcetype": "ninjaone:json",
        "index": "rmm",
        "event": payload,
    }


def test_hec_answers_map_to_outcomes(hec: HecFake) -> None:
    message = vendor_message(minimal_activity(5))
    wrong = send(hec_destination(hec, token="nope"), message, Envelope("d"), route="r", timeout=3)
    assert (wrong.ok, wrong.permanent, wrong.status_code) == (False, True, 403)
    assert "nope" not in (wrong.error or "")
    hec.down = True
    busy = send(hec_destination(hec), message, Envelope("d"), route="r", timeout=3)
    assert (busy.ok, busy.permanent, busy.status_code) == (False, False, 503)
    hec.down = False
    assert hec.events == []
    assert send(hec_destination(hec), message, Envelope("d"), route="r", timeout=3).ok
    assert [e["event"]["id"] for e in hec.events] == [5]


def test_deliveries_sent_together_go_as_one_batch_in_activity_order(hec: HecFake) -> None:
    destination = hec_destination(hec)
    hec.delay = 0.5  # the first request is in flight while the others arrive
    outcomes: dict[int, Any] = {}

    def deliver(activity_id: int) -> None:
        message = vendor_message(
            minimal_activity(activity_id, activity_time=1764300000 + activity_id)
        )
        outcomes[activity_id] = send(
            destination, message, Envelope(str(activity_id)), route="r", timeout=5
        )

    first = threading.Thread(target=deliver, args=(1,))
    first.start()
    time.sleep(0.2)
    rest = [threading.Thread(target=deliver, args=(n,)) for n in (6, 3, 5, 2, 4)]
    for thread in rest:
        thread.start()
    for thread in [first, *rest]:
        thread.join(10)
    assert all(o.ok for o in outcomes.values()) and len(outcomes) == 6
    assert hec.batches == [1, 5]
    assert [e["event"]["id"] for e in hec.events] == [1, 2, 3, 4, 5, 6]


def test_the_collector_url_defaults_to_the_event_endpoint() -> None:
    assert (
        splunk_hec.collector_url("https://splunk:8088")
        == "https://splunk:8088/services/collector/event"
    )
    assert splunk_hec.collector_url("https://proxy/hec/raw-event") == "https://proxy/hec/raw-event"
    with pytest.raises(RoutesError, match="missing 'url'"):
        vendor_destination("{kind: splunk_hec, token_env: T}", {"T": "t"})
    with pytest.raises(RoutesError, match="batch_size: expected 1 to 10000"):
        vendor_destination(
            "{kind: splunk_hec, url: 'https://s', token_env: T, batch_size: 0}", {"T": "t"}
        )


@pytest.mark.parametrize("transport", ["tcp", "udp", "tls"])
def test_an_activity_is_one_rfc5424_line(transport: str, tmp_path: Path) -> None:
    listener = SyslogListener(transport, tmp_path).start()
    try:
        ca = f", ca_file: '{listener.cert}'" if listener.cert else ""
        destination = vendor_destination(
            f"{{kind: syslog, url: '{listener.url}', facility: local4{ca}}}"
        )
        payload = condition_activity(
            77, activity_time=1764300000.5, severity="CRITICAL",
            message='C: is "full"]\\ again\nsecond line',
        )  # fmt: skip
        payload["device"]["references"]["organization"]["name"] = 'Acme "Ltd"]'
        assert send(destination, vendor_message(payload), Envelope("d"), route="r", timeout=3).ok
        [line] = listener.wait_for(1)
    finally:
        listener.stop()
    assert listener.errors == []
    assert (line["facility"], line["severity"]) == (20, 2)  # local4, crit
    assert line["timestamp"] == "2025-11-28T03:20:00.500000Z"
    assert (line["hostname"], line["app"], line["msgid"]) == ("SRV-042", "ninjahook", "CONDITION")
    assert line["sd"] == {
        "ninjahook@32473": {
            "id": "77",
            "activityType": "CONDITION",
            "statusCode": "TRIGGERED",
            "device": "SRV-042",
            "organization": 'Acme "Ltd"]',
            "alertKey": payload["seriesUid"],
        }
    }
    assert line["msg"] == 'C: is "full"]\\ again second line'


def test_sd_values_escape_what_rfc5424_asks() -> None:
    assert param_value('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    parsed = parse_rfc5424('<14>1 - - app - - [x@1 k="a\\"b\\\\c\\]d"] m')
    assert parsed["sd"] == {"x@1": {"k": 'a"b\\c]d'}}


def test_a_syslog_receiver_that_is_down_is_retried() -> None:
    destination = vendor_destination(f"{{kind: syslog, url: '{closed_port_url('tcp')}'}}")
    outcome = send(
        destination, vendor_message(minimal_activity(1)), Envelope("d"), route="r", timeout=2
    )
    assert (outcome.ok, outcome.permanent) == (False, False)
    with pytest.raises(RoutesError, match="expected udp://, tcp:// or tls://"):
        vendor_destination("{kind: syslog, url: 'https://siem'}")


ROUTES = """\
destinations:
  hec:
    kind: splunk_hec
    url: {hec}
    token_env: HEC_TOKEN
  siem:
    kind: syslog
    url: {syslog}
routes:
  - name: mirror
    once_per_alert: false
    destinations: [hec, siem]
"""


def test_a_siem_mirror_gets_every_activity_once_in_order_per_device(
    make_app: Callable[..., Any],
    hec: HecFake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    syslog_port = free_port()
    monkeypatch.setenv("HEC_TOKEN", hec.token)
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.format(hec=hec.url, syslog=f"tcp://127.0.0.1:{syslog_port}"))
    app = make_app(routes_file=str(routes), **FAST_DELIVERY)
    state = app.app.extensions["ninjahook"]
    now = time.time()
    sent: list[dict[str, Any]] = []
    with app.test_client() as client:
        for n in range(12):
            series = f"5b1e0d1c-0000-4000-8000-{n // 3:012d}"
            status = ("TRIGGERED", "TRIGGERED", "RESET")[n % 3]  # a repeat and a reset too
            payload = condition_activity(
                300 + n,
                series_uid=series,
                status=status,
                device_id=40 + n % 2,
                activity_time=now + n,
            )
            sent.append(payload)
            assert (
                client.post(INGEST_PATH, json=payload, headers=WEBHOOK_HEADERS).status_code == 200
            )
        # Short outages: the collector answers 503 twice, and the syslog receiver
        # starts listening only after the first attempts were refused.
        hec.fail_next(503, count=2)
        started: list[SyslogListener] = []
        starting = threading.Timer(
            0.6, lambda: started.append(SyslogListener("tcp", port=syslog_port).start())
        )
        starting.start()
        settle_deliveries(state)
        starting.join()
    [listener] = started
    lines = listener.wait_for(len(sent))
    listener.stop()
    assert listener.errors == []
    for received in (
        [e["event"]["id"] for e in hec.events],
        [int(line["sd"]["ninjahook@32473"]["id"]) for line in lines],
    ):
        assert sorted(received) == [p["id"] for p in sent]  # every activity, once
        for device in (40, 41):
            mine = [p["id"] for p in sent if p["deviceId"] == device]
            assert [i for i in received if i in mine] == mine
