"""Local stand-ins for PagerDuty, Opsgenie, Splunk HEC and a syslog receiver, written
from each vendor's public documentation (not from our client) and kept stateful, so a
test asserts where the far side ends up: incidents by dedup_key, alerts by alias,
events received, lines parsed.

- PagerDuty Events API v2 (developer.pagerduty.com, "Send an Alert Event"):
  ``POST /v2/enqueue``; 202 ``{"status":"success","message":"Event processed",
  "dedup_key":…}``; 400 ``{"status":"invalid event",…,"errors":[…]}``; 429 when
  throttled. A trigger for a dedup_key with an open incident adds to it; one after the
  incident resolved opens a new one; acknowledge/resolve without an open incident do
  nothing.
- Opsgenie Alert API (docs.opsgenie.com, "Alert API"): ``Authorization: GenieKey <key>``;
  ``POST /v2/alerts`` (message ≤130, alias ≤512, priority P1 to P5), ``POST
  /v2/alerts/{id}/close|acknowledge?identifierType=alias``; 202 ``{"result":"Request will
  be processed","took":…,"requestId":…}``, processed afterwards (an unknown alias fails
  then, not in the answer); a create whose alias matches an open alert adds to its count.
- Splunk HEC (docs.splunk.com, "Format events for HTTP Event Collector"):
  ``POST /services/collector/event``, ``Authorization: Splunk <token>``, a body of one
  or more JSON event objects; 200 ``{"text":"Success","code":0}``; 401 code 2 (token
  required), 403 code 4 (invalid token), 400 code 6 (invalid data format), 12 (event
  field required), 13 (event field blank); 503 code 9 (server busy).
- Syslog: RFC 5424 messages, octet-counted on TCP (RFC 6587 §3.4.1), one per UDP
  datagram (RFC 5426), TLS (RFC 5425) with the same framing as TCP.
"""

from __future__ import annotations

import json
import re
import socketserver
import ssl
import subprocess
import threading
import time
import uuid
from collections import deque
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.servers import free_port


class _JsonServer:
    """A threaded HTTP server on 127.0.0.1 whose subclass answers every POST.

    ``down`` answers every request with ``down_status`` (an outage; nothing is kept);
    :meth:`fail_next` makes the next requests answer a given status first.
    """

    down_status = 503
    down_body: dict[str, Any] = {"message": "service unavailable"}

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.down = False
        self._forced: deque[tuple[int, dict[str, str]]] = deque()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer.lock:
                    outer.requests.append({"path": self.path, "headers": headers, "body": raw})
                    forced = outer._forced.popleft() if outer._forced else None
                    if outer.down:
                        status, body, extra = outer.down_status, outer.down_body, {}
                    elif forced is not None:
                        status, body, extra = forced[0], {"message": "forced"}, forced[1]
                    else:
                        status, body = outer.handle(self.path, headers, raw)
                        extra = {}
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        raise NotImplementedError

    def fail_next(self, status: int, count: int = 1, retry_after: str | None = None) -> None:
        extra = {"Retry-After": retry_after} if retry_after is not None else {}
        with self.lock:
            self._forced.extend([(status, extra)] * count)

    def start(self) -> Any:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


PD_ACTIONS = {"trigger", "acknowledge", "resolve"}
PD_SEVERITIES = {"critical", "error", "warning", "info"}


class PagerDutyFake(_JsonServer):
    """The Events API v2 enqueue endpoint, keeping incidents by dedup_key."""

    down_status = 500
    down_body = {"status": "error", "message": "internal server error"}

    def __init__(self, routing_key: str = "R0UTINGKEY0000000000000000000000") -> None:
        super().__init__()
        self.url = f"{self.base}/v2/enqueue"
        self.routing_key = routing_key
        # dedup_key → its incidents, oldest first: {"status", "events", "trigger"}.
        self.incidents: dict[str, list[dict[str, Any]]] = {}

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        if urlsplit(path).path != "/v2/enqueue":
            return 404, {"status": "not found"}
        try:
            event = json.loads(raw)
        except ValueError:
            return 400, {"status": "invalid event", "message": "Event object is invalid"}
        errors = self._invalid(event)
        if errors:
            return 400, {
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": errors,
            }
        key = event.get("dedup_key") or uuid.uuid4().hex
        action = event["event_action"]
        history = self.incidents.setdefault(key, [])
        open_ = next((i for i in history if i["status"] != "resolved"), None)
        if action == "trigger":
            if open_ is None:
                history.append({"status": "triggered", "events": [event], "trigger": event})
            else:
                open_["events"].append(event)
        elif open_ is not None:
            open_["status"] = "acknowledged" if action == "acknowledge" else "resolved"
            open_["events"].append(event)
        if not history:
            del self.incidents[key]
        return 202, {"status": "success", "message": "Event processed", "dedup_key": key}

    def _invalid(self, event: Any) -> list[str]:
        if not isinstance(event, dict):
            return ["Event object must be a JSON object"]
        errors = []
        if event.get("routing_key") != self.routing_key:
            errors.append("'routing_key' is invalid")
        if event.get("event_action") not in PD_ACTIONS:
            errors.append("'event_action' is invalid")
        key = event.get("dedup_key")
        if key is not None and (not isinstance(key, str) or len(key) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        if event.get("event_action") in ("acknowledge", "resolve") and not key:
            errors.append("'dedup_key' is required for acknowledge and resolve")
        if event.get("event_action") == "trigger":
            payload = event.get("payload")
            if not isinstance(payload, dict):
                return [*errors, "'payload' is missing"]
            summary = payload.get("summary")
            if not isinstance(summary, str) or not summary or len(summary) > 1024:
                errors.append("'payload.summary' is required (at most 1024 characters)")
            if not isinstance(payload.get("source"), str) or not payload["source"]:
                errors.append("'payload.source' is required")
            if payload.get("severity") not in PD_SEVERITIES:
                errors.append("'payload.severity' is invalid")
            if "timestamp" in payload:
                try:
                    datetime.fromisoformat(str(payload["timestamp"]).replace("Z", "+00:00"))
                except ValueError:
                    errors.append("'payload.timestamp' is not ISO 8601")
            for link in event.get("links") or []:
                if not isinstance(link, dict) or not isinstance(link.get("href"), str):
                    errors.append("'links' entries need an href")
        return errors

    def state(self) -> dict[str, list[str]]:
        """dedup_key → the status of each of its incidents, oldest first."""
        with self.lock:
            return {k: [i["status"] for i in v] for k, v in self.incidents.items()}


OPSGENIE_PRIORITIES = {"P1", "P2", "P3", "P4", "P5"}


class OpsgenieFake(_JsonServer):
    """The Alert API's create, close and acknowledge, keeping alerts by alias."""

    down_status = 503
    down_body = {"message": "Service unavailable", "took": 0.0, "requestId": "-"}

    def __init__(self, api_key: str = "0psgenie-key-0000-0000-000000000000") -> None:
        super().__init__()
        self.url = self.base
        self.api_key = api_key
        # alias → its alerts, oldest first: {"status": open|closed, "acknowledged", …}.
        self.alerts: dict[str, list[dict[str, Any]]] = {}
        # Requests accepted (202) that failed when processed, as Opsgenie records them.
        self.failed: list[str] = []

    def _accepted(self) -> tuple[int, Any]:
        return 202, {
            "result": "Request will be processed",
            "took": 0.01,
            "requestId": str(uuid.uuid4()),
        }

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        auth = headers.get("authorization", "")
        if auth != f"GenieKey {self.api_key}":
            return 401, {"message": "Could not authenticate", "took": 0.0, "requestId": "-"}
        parts = urlsplit(path)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return 400, {"message": "Request body is not processable", "took": 0.0}
        if parts.path == "/v2/alerts":
            message, alias = body.get("message"), body.get("alias")
            if not isinstance(message, str) or not message or len(message) > 130:
                return 422, {"message": "Message can not be empty or longer than 130"}
            if alias is not None and (not isinstance(alias, str) or len(alias) > 512):
                return 422, {"message": "Alias can not be longer than 512"}
            if body.get("priority", "P3") not in OPSGENIE_PRIORITIES:
                return 422, {"message": "Priority should be one of P1..P5"}
            details = body.get("details") or {}
            if not all(isinstance(v, str) for v in details.values()):
                return 422, {"message": "details values must be strings"}
            key = alias or str(uuid.uuid4())
            history = self.alerts.setdefault(key, [])
            open_ = next((a for a in history if a["status"] == "open"), None)
            if open_ is not None:
                open_["count"] += 1
            else:
                history.append(
                    {"status": "open", "acknowledged": False, "count": 1, "create": body}
                )
            return self._accepted()
        match = re.fullmatch(r"/v2/alerts/([^/]+)/(close|acknowledge)", parts.path)
        if match is None:
            return 404, {"message": "Not found"}
        if parse_qs(parts.query).get("identifierType") != ["alias"]:
            self.failed.append(f"{match.group(2)} {match.group(1)}: not by alias")
            return self._accepted()
        alias = unquote(match.group(1))
        open_ = next((a for a in self.alerts.get(alias, []) if a["status"] == "open"), None)
        if open_ is None:
            self.failed.append(f"{match.group(2)} {alias}: Alert does not exist")
        elif match.group(2) == "close":
            open_["status"] = "closed"
        else:
            open_["acknowledged"] = True
        return self._accepted()

    def state(self) -> dict[str, list[str]]:
        """alias → the status of each of its alerts (``open``, ``acked``, ``closed``)."""
        with self.lock:
            return {
                k: [
                    "closed"
                    if a["status"] == "closed"
                    else "acked"
                    if a["acknowledged"]
                    else "open"
                    for a in v
                ]
                for k, v in self.alerts.items()
            }


class HecFake(_JsonServer):
    """The HTTP Event Collector's event endpoint: checks the token and the framing."""

    down_status = 503
    down_body = {"text": "Server is busy", "code": 9}

    def __init__(self, token: str = "11111111-2222-3333-4444-555555555555") -> None:
        super().__init__()
        self.url = self.base
        self.token = token
        self.events: list[dict[str, Any]] = []
        self.batches: list[int] = []  # events per accepted request
        self.delay = 0.0  # seconds each accepted request takes

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        if urlsplit(path).path != "/services/collector/event":
            return 404, {"text": "The requested URL was not found on this server.", "code": 404}
        auth = headers.get("authorization", "")
        if not auth:
            return 401, {"text": "Token is required", "code": 2}
        if auth != f"Splunk {self.token}":
            return 403, {"text": "Invalid token", "code": 4}
        decoder = json.JSONDecoder()
        text = raw.decode()
        events: list[dict[str, Any]] = []
        at = 0
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            if at >= len(text):
                break
            try:
                event, at = decoder.raw_decode(text, at)
            except ValueError:
                return 400, {
                    "text": "Invalid data format",
                    "code": 6,
                    "invalid-event-number": len(events),
                }
            if not isinstance(event, dict):
                return 400, {
                    "text": "Invalid data format",
                    "code": 6,
                    "invalid-event-number": len(events),
                }
            if "event" not in event:
                return 400, {
                    "text": "Event field is required",
                    "code": 12,
                    "invalid-event-number": len(events),
                }
            if event["event"] in ("", None, {}):
                return 400, {
                    "text": "Event field cannot be blank",
                    "code": 13,
                    "invalid-event-number": len(events),
                }
            if "time" in event and (
                isinstance(event["time"], bool) or not isinstance(event["time"], int | float | str)
            ):
                return 400, {
                    "text": "Invalid data format",
                    "code": 6,
                    "invalid-event-number": len(events),
                }
            events.append(event)
        if not events:
            return 400, {"text": "No data", "code": 5}
        if self.delay:
            time.sleep(self.delay)
        self.events.extend(events)
        self.batches.append(len(events))
        return 200, {"text": "Success", "code": 0}


_HEADER = re.compile(
    r"^<(?P<pri>\d{1,3})>(?P<version>1) (?P<timestamp>\S+) (?P<hostname>\S+) "
    r"(?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) (?P<rest>.*)$",
    re.DOTALL,
)
_SD_PARAM = re.compile(r'\s*([^= \]"]+)="((?:[^"\\\]]|\\.)*)"')


def parse_rfc5424(line: str) -> dict[str, Any]:
    """One RFC 5424 message as a dict; raises ValueError when it is not one."""
    match = _HEADER.match(line)
    if match is None:
        raise ValueError(f"not RFC 5424: {line[:80]!r}")
    pri = int(match["pri"])
    if pri > 191:
        raise ValueError("PRI out of range")
    for name, limit in (("hostname", 255), ("app", 48), ("procid", 128), ("msgid", 32)):
        value = match[name]
        if len(value) > limit or not all(0x21 <= ord(c) <= 0x7E for c in value):
            raise ValueError(f"{name} is not PRINTUSASCII within {limit}")
    if match["timestamp"] != "-":
        datetime.fromisoformat(match["timestamp"].replace("Z", "+00:00"))
        if not re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)", match["timestamp"]
        ):
            raise ValueError("TIMESTAMP is not RFC 3339 as RFC 5424 restricts it")
    rest = match["rest"]
    structured: dict[str, dict[str, str]] = {}
    if rest.startswith("-"):
        rest = rest[1:]
    else:
        while rest.startswith("["):
            sd = re.match(r'\[([^= \]"]{1,32})', rest)
            if sd is None:
                raise ValueError("bad SD-ID")
            at = sd.end()
            params: dict[str, str] = {}
            while True:
                param = _SD_PARAM.match(rest, at)
                if param is None:
                    break
                params[param[1]] = re.sub(r"\\(.)", r"\1", param[2])
                at = param.end()
            if rest[at : at + 1] != "]":
                raise ValueError(f"unterminated SD-ELEMENT at {rest[at : at + 20]!r}")
            structured[sd[1]] = params
            rest = rest[at + 1 :]
    if rest and not rest.startswith(" "):
        raise ValueError("no space before MSG")
    return {
        "facility": pri // 8,
        "severity": pri % 8,
        "timestamp": match["timestamp"],
        "hostname": match["hostname"],
        "app": match["app"],
        "procid": match["procid"],
        "msgid": match["msgid"],
        "sd": structured,
        "msg": rest[1:],
    }


class SyslogListener:
    """A syslog receiver on 127.0.0.1: ``tcp`` (octet counting), ``udp`` or ``tls``
    (octet counting inside TLS, with a self-signed certificate for 127.0.0.1 written to
    ``directory``). Every message is parsed; one that is not RFC 5424 is kept in
    :attr:`errors`."""

    def __init__(
        self, transport: str = "tcp", directory: Path | None = None, port: int | None = None
    ) -> None:
        self.transport = transport
        self.port = port or free_port()
        self.url = f"{transport}://127.0.0.1:{self.port}"
        self.messages: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.cert: Path | None = None
        outer = self
        context: ssl.SSLContext | None = None
        if transport == "tls":
            assert directory is not None
            self.cert, key = directory / "syslog-cert.pem", directory / "syslog-key.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-keyout", str(key), "-out", str(self.cert)],
                check=True, capture_output=True,
            )  # fmt: skip
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert, key)

        class Stream(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                conn = self.connection
                if context is not None:
                    conn = context.wrap_socket(conn, server_side=True)
                reader = conn.makefile("rb")
                while True:
                    length = b""
                    while (char := reader.read(1)) not in (b" ", b""):
                        length += char
                    if not length:
                        return
                    if not length.isdigit():
                        outer._keep(None, f"bad frame length {length!r}")
                        return
                    outer._keep(reader.read(int(length)).decode(), None)

        class Datagram(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._keep(self.request[0].decode(), None)

        self.server: socketserver.BaseServer
        if transport == "udp":
            self.server = socketserver.ThreadingUDPServer(("127.0.0.1", self.port), Datagram)
        else:
            socketserver.ThreadingTCPServer.allow_reuse_address = True
            self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Stream)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _keep(self, text: str | None, error: str | None) -> None:
        with self.lock:
            if text is None:
                self.errors.append(error or "?")
                return
            try:
                self.messages.append(parse_rfc5424(text))
            except ValueError as exc:
                self.errors.append(f"{exc}: {text[:120]!r}")

    def start(self) -> SyslogListener:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) + len(self.errors) >= count:
                    return list(self.messages)
            time.sleep(0.02)
        with self.lock:
            return list(self.messages)


def closed_port_url(scheme: str = "http") -> str:
    """A URL on 127.0.0.1 where nothing listens (a destination that is down)."""
    return f"{scheme}://127.0.0.1:{free_port()}"


def vendor_message(
    payload: dict[str, Any],
    *,
    event: str = "notify",
    links: dict[str, str | None] | None = None,
    trigger: dict[str, Any] | None = None,
) -> Any:
    """The rendered message the worker would hand a destination for ``payload``."""
    from app.alerts.service import alert_key
    from app.notifications.matching import describe, template_context
    from app.notifications.templates import render

    context = template_context(
        describe(None, payload),
        route="r",
        event=event,
        alert_key=alert_key(payload),
        delivery_id="delivery-1",
        refers_to=None,
        links=links,
        trigger=trigger,
    )
    return render(context)


def vendor_destination(kind_yaml: str, environ: dict[str, str] | None = None) -> Any:
    """Destination ``d`` parsed from its routes-file mapping (flow style)."""
    from app.notifications.routes import parse_routes

    config = parse_routes(
        f"destinations:\n  d: {kind_yaml}\nroutes:\n  - {{name: r, destinations: [d]}}\n",
        environ=environ or {},
    )
    return config.destinations["d"]
