"""The production server: gunicorn with uvicorn workers, configured by gunicorn.conf.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from app.storage.db import Database
from tests.support import (
    API_HEADERS,
    API_TOKEN,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    WEBHOOK_TOKEN,
    GunicornServer,
    condition_activity,
)


def test_gunicorn_accepts_a_delivery_and_reads_it_back(database_url: str, tmp_path: Path) -> None:
    env = {
        "NINJAHOOK_DATABASE_URL": database_url,
        "NINJAHOOK_INSTANCE_PATH": str(tmp_path / "instance"),
        "NINJAHOOK_WEBHOOK_TOKENS": WEBHOOK_TOKEN,
        "NINJAHOOK_API_TOKENS": API_TOKEN,
    }
    log = tmp_path / "gunicorn.log"
    server = GunicornServer(env, workers=2, log_path=log).start()
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
    env: dict[str, Any] = {
        "NINJAHOOK_DATABASE_URL": database_url,
        "NINJAHOOK_INSTANCE_PATH": str(tmp_path / "instance"),
        "NINJAHOOK_WEBHOOK_TOKENS": WEBHOOK_TOKEN,
        "GUNICORN_CMD_ARGS": "--workers 3",
    }
    server = GunicornServer(env, workers=1).start()
    try:
        assert len(server.worker_pids()) == 3
    finally:
        server.stop()
    Database(database_url).dispose()
