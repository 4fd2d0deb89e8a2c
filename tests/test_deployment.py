"""The production server: gunicorn with uvicorn workers, configured by gunicorn.conf.py."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from app.storage.db import Database
from tests.support import (
    API_HEADERS,
    API_TOKEN,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    WEBHOOK_TOKEN,
    condition_activity,
    start_gunicorn,
)


def test_gunicorn_accepts_a_delivery_and_reads_it_back(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    server = start_gunicorn(
        database_url,
        tmp_path / "instance",
        workers=2,
        log_path=log,
        NINJAHOOK_BACKGROUND_TASKS="1",  # as deployed
    )
    try:
        raw = json.dumps(condition_activity(777001), indent=1).encode()
        r = httpx.post(server.url + INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS)
        assert r.status_code == 200 and r.json() == {"id": 777001, "duplicate": False}
        # The query-token form too, to check that the access log redacts it.
        r = httpx.post(
            f"{server.url}{INGEST_PATH}?token={WEBHOOK_TOKEN}",
            content=json.dumps(condition_activity(777002)).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 200
        record = httpx.get(server.url + "/activities/777001", headers=API_HEADERS).json()
        assert record["deviceId"] == 42 and record["payload"]["id"] == 777001
        raw_back = httpx.get(server.url + "/activities/777001/raw", headers=API_HEADERS)
        assert raw_back.headers["content-type"].startswith("application/json")
        assert raw_back.content == raw
        assert len(server.worker_pids()) == 2
    finally:
        assert server.stop() == 0
    text = log.read_text()
    assert "POST /webhooks/ninjarmm/activity" in text  # the access log is on
    assert WEBHOOK_TOKEN not in text and API_TOKEN not in text


def test_gunicorn_cmd_args_override_workers(database_url: str, tmp_path: Path) -> None:
    server = start_gunicorn(
        database_url, tmp_path / "instance", workers=1, GUNICORN_CMD_ARGS="--workers 3"
    )
    try:
        assert len(server.worker_pids()) == 3
    finally:
        server.stop()
    Database(database_url).dispose()


def test_two_servers_from_one_directory_do_not_share_a_control_socket(
    database_url: str, tmp_path: Path
) -> None:
    """Two servers started from the same working directory (the checkout), with their own
    ports and instance folders: stopping one leaves the other serving, its gunicorn control
    socket (gunicornc's, in its instance folder) still there and still its own."""
    a = start_gunicorn(database_url, tmp_path / "a", workers=1, log_path=tmp_path / "a.log")
    try:
        b = start_gunicorn(database_url, tmp_path / "b", workers=1, log_path=tmp_path / "b.log")
        try:
            assert a.port != b.port
            controlled = _has_control_socket()
            if controlled:
                for server, name in ((a, "a"), (b, "b")):
                    assert _control_socket_port(tmp_path / name / "gunicorn.ctl") == server.port
            assert a.stop() == 0
            if controlled:
                assert not (tmp_path / "a" / "gunicorn.ctl").exists()
                assert _control_socket_port(tmp_path / "b" / "gunicorn.ctl") == b.port
            r = httpx.post(
                b.url + INGEST_PATH,
                content=json.dumps(condition_activity(777101)).encode(),
                headers=WEBHOOK_HEADERS,
            )
            assert r.status_code == 200 and r.json() == {"id": 777101, "duplicate": False}
            record = httpx.get(b.url + "/activities/777101", headers=API_HEADERS)
            assert record.status_code == 200 and record.json()["id"] == 777101
        finally:
            assert b.stop() == 0
    finally:
        a.stop()
    Database(database_url).dispose()


def _has_control_socket() -> bool:
    """gunicorn 25.1 and newer run a control socket (gunicornc) unless told not to."""
    try:
        import gunicorn.ctl.client  # noqa: F401
    except ImportError:
        return False
    return True


def _control_socket_port(path: Path) -> int:
    """The TCP port of the server answering on the control socket at ``path``."""
    from gunicorn.ctl.client import ControlClient

    assert path.is_socket(), f"no control socket at {path}"
    with ControlClient(str(path), timeout=10) as client:
        listeners = client.send_command("show listeners")["listeners"]
    (listener,) = listeners
    return int(listener["address"].rsplit(":", 1)[1])
