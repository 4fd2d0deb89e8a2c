"""Test helpers: tokens, NinjaOne-shaped payloads and a real server on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

WEBHOOK_TOKEN = "whk_test_token_0123456789abcdef"
API_TOKEN = "api_test_token_0123456789abcdef"
INGEST_PATH = "/webhooks/ninjarmm/activity"
WEBHOOK_HEADERS = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
API_HEADERS = {"Authorization": f"Bearer {API_TOKEN}"}


def condition_activity(
    activity_id: int,
    *,
    status: str = "TRIGGERED",
    series_uid: str | None = None,
    device_id: int = 42,
    organization_id: int = 7,
    location_id: int = 9,
    activity_time: float | None = None,
    severity: str | None = "MAJOR",
    expand: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """A CONDITION activity shaped like NinjaOne's deliveries (expanded device by default)."""
    payload: dict[str, Any] = {
        "id": activity_id,
        "activityTime": activity_time if activity_time is not None else 1764300000.123456789,
        "deviceId": device_id,
        "seriesUid": series_uid or str(uuid.UUID(int=activity_id)),
        "activityType": "CONDITION",
        "statusCode": status,
        "status": status.title(),
        "sourceConfigUid": "0c7ed5a2-4c28-4e9c-8b43-8d4d3b0f2f11",
        "sourceName": "Disk Free Space < 10%",
        "subject": "Disk space low",
        "message": "C: has 8% free space (threshold 10%)",
        "type": "Condition",
        "data": {"message": {"code": "condition_disk_free", "params": {"threshold": "10"}}},
    }
    if severity is not None:
        payload["severity"] = severity
        payload["priority"] = "HIGH"
    if expand:
        payload["device"] = {
            "id": device_id,
            "organizationId": organization_id,
            "locationId": location_id,
            "nodeClass": "WINDOWS_SERVER",
            "approvalStatus": "APPROVED",
            "offline": False,
            "displayName": f"SRV-{device_id:03d}",
            "systemName": f"SRV-{device_id:03d}",
            "lastContact": 1764299990.5,
            "references": {
                "organization": {"id": organization_id, "name": f"Org {organization_id}"},
                "location": {"id": location_id, "name": f"Site {location_id}"},
            },
        }
    payload.update(extra)
    return payload


def minimal_activity(activity_id: int, **extra: Any) -> dict[str, Any]:
    """A delivery as a UI notification channel sends it: no expansion, few fields."""
    payload: dict[str, Any] = {
        "id": activity_id,
        "activityTime": 1764300000.5,
        "deviceId": 17,
        "activityType": "SYSTEM",
        "statusCode": "NODE_AUTOMATICALLY_APPROVED",
        "status": "Node automatically approved",
        "type": "System",
        "message": "Device approved automatically",
        "data": {},
    }
    payload.update(extra)
    return payload


def body(payload: dict[str, Any]) -> bytes:
    """The payload as NinjaOne would send it."""
    return json.dumps(payload, separators=(",", ":")).encode()


def deliver(client: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """POST ``payload`` to the ingest path with the webhook token; asserts 200, returns the
    answer."""
    r = client.post(INGEST_PATH, content=body(payload), headers=WEBHOOK_HEADERS)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def seed_entities(db: Any, *, organization_id: int, device_id: int, location_id: int) -> None:
    """Put one organization, location and device into the entity cache, named like
    :func:`condition_activity`'s expansion (``Org 7``, ``Site 9``, ``SRV-042``)."""
    from app.storage.tables import devices, locations, organizations

    with db.begin() as conn:
        for table, values in (
            (organizations, {"id": organization_id, "name": f"Org {organization_id}"}),
            (
                locations,
                {
                    "id": location_id,
                    "organization_id": organization_id,
                    "name": f"Site {location_id}",
                },
            ),
            (
                devices,
                {
                    "id": device_id,
                    "organization_id": organization_id,
                    "location_id": location_id,
                    "display_name": f"SRV-{device_id:03d}",
                },
            ),
        ):
            if conn.execute(table.select().where(table.c.id == values["id"])).first() is None:
                conn.execute(table.insert().values(**values, observed_at=0.0, updated_at=0.0))


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@contextmanager
def live_server(app: Any) -> Iterator[LiveServer]:
    """Serve ``app`` on loopback for the duration of the block."""
    server = LiveServer(app).start()
    try:
        yield server
    finally:
        server.stop()


ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


class GunicornServer:
    """The production server (gunicorn + uvicorn workers, gunicorn.conf.py) as a subprocess.

    :param env: ninjahook settings as environment variables (NINJAHOOK_*).
    """

    def __init__(
        self, env: dict[str, str], workers: int = 2, port: int | None = None, log_path: Any = None
    ) -> None:
        import os
        import sys

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NINJAHOOK_")},
            "NINJAHOOK_BIND": f"127.0.0.1:{self.port}",
            "NINJAHOOK_WORKERS": str(workers),
            **env,
        }
        self.gunicorn = str(__import__("pathlib").Path(sys.executable).with_name("gunicorn"))
        self.log_path = log_path
        self.proc: Any = None

    def start(self, timeout: float = 30) -> GunicornServer:
        import subprocess

        import httpx

        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [self.gunicorn, "-c", str(ROOT / "gunicorn.conf.py")],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("gunicorn did not become ready")

    def worker_pids(self) -> list[int]:
        """PIDs of the current workers."""
        import subprocess

        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self, sig: int = 15, timeout: float = 40) -> int:
        """Send ``sig`` (SIGTERM: graceful) and wait; returns the exit code."""
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return int(self.proc.wait(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return int(self.proc.wait(10))


class DestinationServer:
    """A webhook destination on 127.0.0.1 that records every request and answers as told.

    :param mode: ``ok`` (200), ``flaky`` (500 to the first attempt of each delivery id,
        then 200), ``slow`` (200 after ``delay`` seconds), ``hang`` (holds each request
        until :meth:`stop`), or ``error`` (always ``status``).
    :param retry_after: sent as Retry-After with every non-2xx answer when set.
    """

    def __init__(
        self,
        mode: str = "ok",
        *,
        port: int | None = None,
        delay: float = 0.0,
        status: int = 500,
        retry_after: str | None = None,
    ) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.mode = mode
        self.delay = delay
        self.status = status
        self.retry_after = retry_after
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.received = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer.lock:
                    seen = [r for r in outer.requests if r["id"] == headers.get("webhook-id")]
                    outer.requests.append(
                        {"id": headers.get("webhook-id"), "headers": headers, "body": raw}
                    )
                outer.received.set()
                code = 200
                if outer.mode == "flaky" and not seen:
                    code = 500
                elif outer.mode == "slow":
                    time.sleep(outer.delay)
                elif outer.mode == "hang":
                    outer.release.wait(60)
                    return
                elif outer.mode == "error":
                    code = outer.status
                self.send_response(code)
                if code >= 300 and outer.retry_after is not None:
                    self.send_header("Retry-After", outer.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> DestinationServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def payloads(self) -> list[dict[str, Any]]:
        """The JSON bodies received, in order."""
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests]

    def ids(self) -> list[str]:
        """The webhook-id of every request received, in order (repeats included)."""
        with self.lock:
            return [r["id"] for r in self.requests]


def run_cli(args: list[str], env: dict[str, str] | None = None) -> Any:
    """Invoke the ``ninjahook`` CLI in-process; returns click's Result.

    Unexpected exceptions propagate (an expected failure must end as a one-line
    error with a non-zero exit code, never as a traceback).
    """
    from click.testing import CliRunner

    from app.cli.main import main

    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def ninjaone_env(emulator: Any, settings: dict[str, Any]) -> dict[str, str]:
    """Environment for CLI commands: this test's database and tokens, NinjaOne = ``emulator``."""
    return {
        "NINJAHOOK_INSTANCE_PATH": settings["instance_path"],
        "NINJAHOOK_DATABASE_URL": settings["database_url"],
        "NINJAHOOK_WEBHOOK_TOKENS": WEBHOOK_TOKEN,
        "NINJAHOOK_API_TOKENS": API_TOKEN,
        "NINJAONE_BASE_URL": emulator.url,
        "NINJAONE_CLIENT_ID": emulator.client_id,
        "NINJAONE_CLIENT_SECRET": emulator.client_secret,
    }


# Delivery settings that make retries and dead letters take well under a second.
FAST_DELIVERY = {
    "delivery_backoff": "0.05",
    "delivery_backoff_max": "0.2",
    "delivery_max_attempts": "3",
    "delivery_lease": "1",
    "delivery_timeout": "3",
    "delivery_poll_interval": "0.05",
}


def one_route_file(directory: Any, url: str) -> Any:
    """A routes file sending every activity to one webhook destination ``d`` at ``url``
    (route ``all``); returns its path."""
    path = directory / "one-route.yaml"
    path.write_text(
        f"destinations:\n  d: {{kind: webhook, url: '{url}'}}\n"
        "routes:\n  - {name: all, destinations: [d]}\n"
    )
    return path


def settle_deliveries(state: Any, timeout: float = 30) -> None:
    """Run a delivery worker until nothing is pending or in flight (retries included)."""
    from app.notifications.outbox import Worker
    from app.notifications.reads import delivery_metrics

    worker = Worker(state)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            worker.run(drain=True)
            if delivery_metrics(state).queue_depth == 0:
                return
            time.sleep(0.05)
        raise AssertionError("deliveries did not settle")
    finally:
        worker.close()


@contextmanager
def recorded_statements(engine: Any) -> Iterator[list[str]]:
    """The SQL text of every statement ``engine``'s connections run inside the block,
    including the prepared ones (app.storage.prepared), which bypass SQLAlchemy's events."""
    from sqlalchemy import event

    from app.storage import prepared

    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])  # (conn, cursor, statement, parameters, context, many)

    event.listen(engine, "before_cursor_execute", record)
    prepared.statement_observers.append(statements.append)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
        prepared.statement_observers.remove(statements.append)
