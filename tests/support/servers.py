"""Real servers on 127.0.0.1: the app under uvicorn in a thread, the production server
(gunicorn) as a subprocess, and a webhook destination that records what it receives."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import httpx
import uvicorn

from tests.support.databases import migrate_database
from tests.support.paths import ROOT
from tests.support.receiver import API_TOKEN, WEBHOOK_TOKEN


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


class GunicornServer:
    """The production server (gunicorn + uvicorn workers, gunicorn.conf.py) as a subprocess.

    It serves the database it is given as it is: :func:`start_gunicorn` migrates it first.

    :param env: ninjahook settings as environment variables (NINJAHOOK_*).
    """

    def __init__(
        self,
        env: dict[str, str],
        workers: int = 2,
        port: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NINJAHOOK_")},
            "NINJAHOOK_BIND": f"127.0.0.1:{self.port}",
            "NINJAHOOK_WORKERS": str(workers),
            **env,
        }
        self.gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The gunicorn master process (once started)."""
        if self._proc is None:
            raise RuntimeError("gunicorn was not started")
        return self._proc

    def start(self, timeout: float = 30) -> GunicornServer:
        out: IO[bytes] | int = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [self.gunicorn, "-c", str(ROOT / "gunicorn.conf.py")],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            if not isinstance(out, int):
                out.close()  # gunicorn has its own copy
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
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        """Send ``sig`` (SIGTERM: graceful) and wait; returns the exit code."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.poll() is not None:
            return proc.returncode
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(10)


def server_env(database_url: str, instance: Path, **extra: str) -> dict[str, str]:
    """NINJAHOOK_* settings for a gunicorn server on ``database_url`` with the test tokens
    and no background tasks; ``extra`` adds or overrides variables."""
    return {
        "NINJAHOOK_DATABASE_URL": database_url,
        "NINJAHOOK_INSTANCE_PATH": str(instance),
        "NINJAHOOK_WEBHOOK_TOKENS": WEBHOOK_TOKEN,
        "NINJAHOOK_API_TOKENS": API_TOKEN,
        "NINJAHOOK_BACKGROUND_TASKS": "0",
        **extra,
    }


def start_gunicorn(
    database_url: str,
    instance: Path,
    *,
    workers: int = 2,
    port: int | None = None,
    log_path: Path | None = None,
    **extra: str,
) -> GunicornServer:
    """Migrate ``database_url`` (nothing to do when it is up to date), then start the
    production server on it once it answers /readyz, as a deployment would.

    The settings are :func:`server_env`'s, with ``extra`` (NINJAHOOK_* variables, or
    GUNICORN_CMD_ARGS) added or overriding.
    """
    migrate_database(database_url)
    env = server_env(database_url, instance, **extra)
    return GunicornServer(env, workers=workers, port=port, log_path=log_path).start()


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
