"""Idle and slow-header sockets are shed; deliveries get through (a real gunicorn)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from tests.support import INGEST_PATH, WEBHOOK_HEADERS, body, minimal_activity, start_gunicorn

IDLE = 300  # well below the file-descriptor limit of this test process
SLOW = 50


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) before ``deadline``."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_and_slow_header_sockets_are_closed_and_deliveries_get_through(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'ninjahook.sqlite3'}"
    server = start_gunicorn(
        database_url, tmp_path / "instance", workers=1, NINJAHOOK_HEADER_TIMEOUT="2"
    )
    sockets: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        for _ in range(SLOW):
            slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            slow.sendall(b"POST " + INGEST_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n")
            sockets.append(slow)
        opened = time.monotonic()
        # A valid delivery is answered while every one of those sockets is open.
        response = httpx.post(
            f"{server.url}{INGEST_PATH}",
            content=body(minimal_activity(1)),
            headers=WEBHOOK_HEADERS,
            timeout=5,
        )
        assert response.status_code == 200, response.text
        assert time.monotonic() - opened < 2
        # A quiet socket is not closed before the header timeout (2 s)...
        fresh = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sockets.append(fresh)
        fresh_opened = time.monotonic()
        assert not _closed_by_server(fresh, fresh_opened + 1.2)
        # ...and all of them are closed after it.
        deadline = time.monotonic() + 10
        still_open = [s for s in sockets if not _closed_by_server(s, deadline)]
        assert still_open == []
        # A keep-alive connection that answered a request is closed too once it goes quiet
        # half-way through its next request's headers.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            payload = body(minimal_activity(2))
            conn.sendall(
                b"POST " + INGEST_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: " + WEBHOOK_HEADERS["Authorization"].encode() + b"\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
            )
            answer = b""
            while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
                answer.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0] or 0
            ):
                chunk = conn.recv(65536)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer
            conn.sendall(b"GET /healthz HTTP/1.1\r\n")
            assert _closed_by_server(conn, time.monotonic() + 10)
    finally:
        for s in sockets:
            s.close()
        server.stop()
