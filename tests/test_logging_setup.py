"""One logging set-up for gunicorn (master and workers), `ninjahook serve` and the CLI:
timestamps, level, logger and message in text or JSON lines, tokens redacted in both."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.logs import (
    QUIET_LOGGERS,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    request_context,
)
from tests.support import (
    FAST_DELIVERY,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    WEBHOOK_TOKEN,
    DestinationServer,
    condition_activity,
    one_route_file,
    start_gunicorn,
)

# time [pid] LEVEL logger: message
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[\d+\] (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"[\w.]+: "
)
JSON_KEYS = {"time", "level", "logger", "message"}


def _settle(log: Path, needle: str, timeout: float = 20) -> str:
    """The log's text once ``needle`` is in it (the access line follows the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(encoding="utf-8", errors="replace")
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def _run_server(database_url: str, tmp_path: Path, log_format: str) -> str:
    """A gunicorn server (2 workers, background tasks on, one route to a recording
    destination) given one delivery by bearer token and one by query token; its log."""
    log = tmp_path / "gunicorn.log"
    destination = DestinationServer().start()
    try:
        routes = one_route_file(tmp_path, destination.url)
        fast: dict[str, Any] = {f"NINJAHOOK_{k.upper()}": v for k, v in FAST_DELIVERY.items()}
        server = start_gunicorn(
            database_url,
            tmp_path / "instance",
            workers=2,
            log_path=log,
            NINJAHOOK_LOG_FORMAT=log_format,
            NINJAHOOK_BACKGROUND_TASKS="1",
            NINJAHOOK_ROUTES=str(routes),
            NINJAHOOK_DELIVERY_WORKER="on",
            **fast,
        )
        try:
            r = httpx.post(
                server.url + INGEST_PATH,
                content=json.dumps(condition_activity(881001)).encode(),
                headers=WEBHOOK_HEADERS,
            )
            assert r.status_code == 200
            r = httpx.post(
                f"{server.url}{INGEST_PATH}?token={WEBHOOK_TOKEN}",
                content=json.dumps(condition_activity(881002)).encode(),
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 200
            # A refused token in the query string: logged too, and redacted.
            r = httpx.get(f"{server.url}/activities?token={WEBHOOK_TOKEN}x")
            assert r.status_code == 401
            _settle(log, "delivered")
        finally:
            assert server.stop() == 0
    finally:
        destination.stop()
    return log.read_text(encoding="utf-8", errors="replace")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_gunicorn_text_log_has_time_level_logger_and_the_apps_info_lines(
    database_url: str, tmp_path: Path
) -> None:
    text = _run_server(database_url, tmp_path, "text")
    lines = _lines(text)
    assert lines
    assert [line for line in lines if not TEXT_LINE.match(line)] == []
    # gunicorn's own logger, the application's INFO lines (a notification sent, the
    # prune summary) and the access log, all in the one format.
    assert any(" INFO gunicorn.error: Listening at:" in line for line in lines)
    assert any(
        re.search(r" INFO app\.notifications\.outbox: delivery \S+ \(all → d\) delivered$", line)
        for line in lines
    )
    assert any(" INFO app.retention.service: pruned " in line for line in lines)
    access = [line for line in lines if " INFO ninjahook.access: " in line and "POST" in line]
    assert len(access) == 2
    assert all(
        re.search(r'"POST /webhooks/ninjarmm/activity\S* HTTP/1.1" 200 [\d.]+ms$', a)
        for a in access
    )
    assert any("?token=[REDACTED]" in a for a in access)
    assert WEBHOOK_TOKEN not in text and WEBHOOK_TOKEN[6:18] not in text


def test_gunicorn_json_log_is_one_object_per_line(database_url: str, tmp_path: Path) -> None:
    text = _run_server(database_url, tmp_path, "json")
    records = [json.loads(line) for line in _lines(text)]  # every line parses
    assert records
    for record in records:
        assert record.keys() >= JSON_KEYS, record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
        assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    assert any(r["logger"] == "gunicorn.error" for r in records)
    delivered = [r for r in records if r["logger"] == "app.notifications.outbox"]
    assert delivered and delivered[0]["level"] == "INFO"
    assert delivered[0]["message"].endswith("delivered")
    access = {
        r["activity_id"]: r
        for r in records
        if r["logger"] == "ninjahook.access" and r.get("method") == "POST"
    }
    assert set(access) == {881001, 881002}
    for line in access.values():
        assert line["path"] == INGEST_PATH
        assert line["status"] == 200
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert "?token=[REDACTED]" in access[881002]["message"]
    refused = [r for r in records if r["logger"] == "ninjahook.access" and r["status"] == 401]
    assert refused and refused[0]["path"] == "/activities"
    assert WEBHOOK_TOKEN not in text and WEBHOOK_TOKEN[6:18] not in text


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_cli_logs_in_the_same_format(tmp_path: Path, log_format: str) -> None:
    """`ninjahook migrate` on a new database: alembic's INFO lines on stderr, formatted as
    the server's are; its one line of output stays on stdout."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("NINJAHOOK_")}
    env |= {
        "NINJAHOOK_INSTANCE_PATH": str(tmp_path / "instance"),
        "NINJAHOOK_LOG_FORMAT": log_format,
    }
    done = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "is at revision" in done.stdout
    lines = _lines(done.stderr)
    assert any("Running upgrade" in line for line in lines)
    for line in lines:
        if log_format == "text":
            assert TEXT_LINE.match(line), line
        else:
            record = json.loads(line)
            assert record.keys() >= JSON_KEYS
            assert record["logger"].startswith("alembic")


def _record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    logger = logging.getLogger("tests.logging_setup")
    return logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, message, args, None, extra=extra
    )


@pytest.fixture
def root_logger() -> Any:
    """The root logger, its handlers and level put back after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in quiet.items():
        logging.getLogger(name).setLevel(was)


def test_json_lines_carry_request_fields_and_redact_every_field(root_logger: Any) -> None:
    configure_logging("INFO", "json", force=True)  # installs the redacting record factory
    with request_context(method="POST", path="/hook") as fields:
        fields["activity_id"] = 7
        record = _record(
            "answered %s",
            f"/hook?token={WEBHOOK_TOKEN}",
            target=f"/x?a=1&token={WEBHOOK_TOKEN}",
        )
        line = json.loads(JsonFormatter().format(record))
    assert line["method"] == "POST" and line["path"] == "/hook" and line["activity_id"] == 7
    assert line["message"] == "answered /hook?token=[REDACTED]"
    assert line["target"] == "/x?a=1&token=[REDACTED]"
    # Outside a request, no request fields.
    outside = json.loads(JsonFormatter().format(_record("idle")))
    assert "method" not in outside and outside["message"] == "idle"
    text = TextFormatter().format(_record("GET /x?token=%s", WEBHOOK_TOKEN))
    assert TEXT_LINE.match(text) and WEBHOOK_TOKEN not in text


def test_configure_logging_replaces_its_own_handler(root_logger: Any) -> None:
    configure_logging("INFO", "json", force=True)
    configure_logging("WARNING", "text", force=True)
    ours = [h for h in root_logger.handlers if getattr(h, "ninjahook", False)]
    assert len(ours) == 1 and isinstance(ours[0].formatter, TextFormatter)
    assert root_logger.level == logging.WARNING


def test_a_root_logger_configured_elsewhere_is_left_alone(root_logger: Any) -> None:
    """As logging.basicConfig: pytest's capture handler (or an embedding program's) stays
    the only handler; the redaction is installed all the same."""
    foreign = logging.NullHandler()
    root_logger.handlers[:] = [foreign]
    root_logger.setLevel(logging.ERROR)
    configure_logging("DEBUG", "json")
    assert root_logger.handlers == [foreign] and root_logger.level == logging.ERROR
    assert getattr(logging.getLogRecordFactory(), "redacts_tokens", False)
