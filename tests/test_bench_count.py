"""The benchmark's counted load: wrk sends exactly ``count`` activities, each once, and
reports the rate over the time they took (not over its ``-d`` cap)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import load


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the receiver
    ids: list[int] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            self.ids.append(json.loads(body)["id"])
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[int, list[int]]]:
    ids: list[int] = []
    handler = type("Handler", (Recorder,), {"ids": ids, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], ids
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(not load.wrk_available(), reason="wrk is not installed")
@pytest.mark.parametrize("count", [101, 1000])
def test_wrk_sends_exactly_the_count_and_times_only_them(
    recorder: tuple[int, list[int]], count: int
) -> None:
    port, ids = recorder
    template = load.one_alert_template(load.activity_template())
    started = time.perf_counter()

    result = load.run_wrk(port, template, "t", seconds=1, connections=16, count=count)

    took = time.perf_counter() - started
    assert result.requests == count
    assert len(ids) == count and len(set(ids)) == count  # each activity once
    assert took < load.COUNT_CAP_SECONDS / 10  # ended when answered, not at the cap
    # The rate is over the time the requests took, so at least count / wall time.
    assert result.rps >= count / took * 0.9
