"""The emulator's HTTP server (Starlette under uvicorn in a thread) and its delivery loop."""

from __future__ import annotations

import json
import logging
import random
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.ninjaone.emulator.seed import ActivityStream, World, build_world

log = logging.getLogger(__name__)

ACTIVITIES_PAGE_MIN, ACTIVITIES_PAGE_MAX, ACTIVITIES_PAGE_DEFAULT = 10, 1000, 200


@dataclass(frozen=True)
class Fault:
    """An answer the emulator gives instead of the real one, to the next API request."""

    status: int
    body: str = ""
    content_type: str = "application/json"
    retry_after: str | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class Delivery:
    """One webhook POST the emulator attempted (or dropped on purpose)."""

    activity_id: int
    outcome: str  # "delivered", "dropped", "failed"
    status: int | None = None
    detail: str = ""


class Emulator:
    """NinjaOne on ``http://127.0.0.1:<port>``; a context manager that starts and stops it.

    :param client_id: / :param client_secret: the only credentials the token endpoint accepts.
    :param seed: derives the tenant and the activity stream.
    :param history: activities that exist before the first :meth:`produce` (never delivered).
    :param drop: probability that a delivery is silently not sent.
    :param duplicate: probability that a delivery is sent twice.
    :param rate: activities per second produced by a background thread (0: only on demand).
    :param token_lifetime: the ``expires_in`` of issued access tokens, in seconds.
    :param webhook_forbidden: answer 403 to ``PUT /v2/webhook``, like an API client
        without system-administrator rights.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = "emulator-client-id",
        client_secret: str = "emulator-client-secret",
        seed: int = 1,
        history: int = 0,
        drop: float = 0.0,
        duplicate: float = 0.0,
        rate: float = 0.0,
        token_lifetime: int = 3600,
        webhook_forbidden: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.client_secret = client_secret
        self.drop = drop
        self.duplicate = duplicate
        self.rate = rate
        self.token_lifetime = token_lifetime
        self.webhook_forbidden = webhook_forbidden
        self.world: World = build_world(seed, time.time())
        self.stream = ActivityStream(self.world, random.Random(seed + 1))
        self._delivery_rng = random.Random(seed + 2)
        self._lock = threading.RLock()
        self.activities: list[dict[str, Any]] = []
        self.webhook: dict[str, Any] | None = None
        self.deliveries: list[Delivery] = []
        self.token_requests = 0
        self.api_requests: list[str] = []
        # The uids of the alerts reset through the API (DELETE /v2/alert/{uid} or
        # POST /v2/alert/{uid}/reset), in order; with the body of a POST reset.
        self.alert_resets: list[tuple[str, Any]] = []
        self._tokens: set[str] = set()
        self._faults: deque[Fault] = deque()
        self._http = httpx.Client(timeout=10)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._producer: threading.Thread | None = None
        self._stop = threading.Event()
        for _ in range(history):
            self.activities.append(self.stream.next())

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to give ninjahook as NINJAONE_BASE_URL."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Emulator:
        """Serve in a background thread; returns when the port accepts connections."""
        if self.port == 0:
            import socket

            with socket.socket() as sock:
                sock.bind((self.host, 0))
                self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.asgi_app(), host=self.host, port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, name="ninjaone-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the NinjaOne emulator did not start")
            time.sleep(0.02)
        if self.rate > 0:
            self._producer = threading.Thread(
                target=self._produce_loop, name="emulator-producer", daemon=True
            )
            self._producer.start()
        return self

    def stop(self) -> None:
        """Stop producing and serving."""
        self._stop.set()
        if self._producer is not None:
            self._producer.join(10)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(20)
        self._http.close()

    def serve_forever(self) -> None:
        """Start, then block until interrupted (``ninjahook emulator``)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- producing and delivering -------------------------------------------------------

    def _produce_loop(self) -> None:
        while not self._stop.wait(1.0 / self.rate):
            try:
                self.produce(1)
            except Exception:
                log.exception("emulator: producing an activity failed")

    def produce(self, count: int = 1) -> list[dict[str, Any]]:
        """Record ``count`` new activities and deliver each to the webhook, if one is set."""
        produced = []
        for _ in range(count):
            with self._lock:
                activity = self.stream.next()
                self.activities.append(activity)
                webhook = self.webhook
            produced.append(activity)
            if webhook is not None and _wanted(webhook, activity):
                self._deliver(webhook, activity)
        return produced

    # --- changes to the tenant, each reported as NinjaOne reports it ----------------------

    def _emit(self, change: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Apply ``change`` (which returns its SYSTEM activity) and deliver that activity."""
        with self._lock:
            activity = change()
            self.activities.append(activity)
            webhook = self.webhook
        if webhook is not None and _wanted(webhook, activity):
            self._deliver(webhook, activity)
        return activity

    def _device(self, device_id: int) -> dict[str, Any]:
        device = self.world.device(device_id)
        if device is None:
            raise KeyError(f"no device {device_id} in the emulated tenant")
        return device

    def rename_device(self, device_id: int, name: str) -> dict[str, Any]:
        """Rename a device (its displayName) and send ``NODE_UPDATED``."""

        def change() -> dict[str, Any]:
            device = self._device(device_id)
            device["displayName"] = name
            device["lastUpdate"] = round(time.time(), 3)
            return self.stream.system_event(
                "NODE_UPDATED", f"{name} was updated", device_id=device_id
            )

        return self._emit(change)

    def move_device(self, device_id: int, location_id: int) -> dict[str, Any]:
        """Move a device to another location (and its organization) and send ``NODE_UPDATED``."""

        def change() -> dict[str, Any]:
            device = self._device(device_id)
            location = self.world.location(location_id)
            device["locationId"] = location_id
            device["organizationId"] = location["organizationId"]
            device["lastUpdate"] = round(time.time(), 3)
            return self.stream.system_event(
                "NODE_UPDATED",
                f"{device['displayName']} was moved to {location['name']}",
                device_id=device_id,
            )

        return self._emit(change)

    def delete_device(self, device_id: int) -> dict[str, Any]:
        """Delete a device and send ``NODE_DELETED``; the API answers 404 for it from now on."""

        def change() -> dict[str, Any]:
            device = self._device(device_id)
            self.world.devices.remove(device)
            # Nothing follows up on a deleted device's pending conditions or scripts.
            self.stream.drop_device(device_id)
            return self.stream.system_event(
                "NODE_DELETED", f"{device['displayName']} was deleted", device_id=device_id
            )

        return self._emit(change)

    def rename_organization(self, organization_id: int, name: str) -> dict[str, Any]:
        """Rename an organization and send ``CLIENT_UPDATED`` (which names no id)."""

        def change() -> dict[str, Any]:
            self.world.organization(organization_id)["name"] = name
            return self.stream.system_event("CLIENT_UPDATED", f"Organization {name} was updated")

        return self._emit(change)

    def rename_location(self, location_id: int, name: str) -> dict[str, Any]:
        """Rename a location and send ``LOCATION_UPDATED`` (which names no id)."""

        def change() -> dict[str, Any]:
            self.world.location(location_id)["name"] = name
            return self.stream.system_event("LOCATION_UPDATED", f"Location {name} was updated")

        return self._emit(change)

    def create_device(
        self, location_id: int, name: str, node_class: str = "WINDOWS_WORKSTATION"
    ) -> dict[str, Any]:
        """Enrol a new device in a location and send ``NODE_CREATED`` (its ``deviceId`` is
        the new device's id, never one the tenant had before)."""

        def change() -> dict[str, Any]:
            location = self.world.location(location_id)
            now = round(time.time(), 3)
            device_id = self.world.new_device_id()
            self.world.devices.append(
                {
                    "id": device_id,
                    "organizationId": location["organizationId"],
                    "locationId": location_id,
                    "nodeClass": node_class,
                    "nodeRoleId": 1,
                    "rolePolicyId": 10,
                    "approvalStatus": "APPROVED",
                    "offline": False,
                    "displayName": name,
                    "systemName": name,
                    "dnsName": f"{name.lower()}.local",
                    "netbiosName": name[:15],
                    "created": now,
                    "lastContact": now,
                    "lastUpdate": now,
                    "tags": [],
                    "fields": {},
                }
            )
            return self.stream.system_event(
                "NODE_CREATED", f"{name} was created", device_id=device_id
            )

        return self._emit(change)

    def reject_device(
        self, device_id: int, status: str = "NODE_REGISTRATION_REJECTED"
    ) -> dict[str, Any]:
        """Reject a device (``status``: ``NODE_REGISTRATION_REJECTED``,
        ``NODE_MANUALLY_REJECTED`` or ``NODE_AUTOMATICALLY_REJECTED``) and send that
        event; a rejected device is not managed, so the API answers 404 for it."""

        def change() -> dict[str, Any]:
            device = self._device(device_id)
            self.world.devices.remove(device)
            self.stream.drop_device(device_id)
            return self.stream.system_event(
                status, f"{device['displayName']} was rejected", device_id=device_id
            )

        return self._emit(change)

    def _remove_devices(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        for device in [d for d in self.world.devices if not keep(d)]:
            self.world.devices.remove(device)
            self.stream.drop_device(device["id"])

    def delete_organization(self, organization_id: int) -> dict[str, Any]:
        """Delete an organization with its locations and devices and send
        ``CLIENT_DELETED`` (which names no id; no event for each device)."""

        def change() -> dict[str, Any]:
            org = self.world.organization(organization_id)
            self.world.organizations.remove(org)
            self.world.locations[:] = [
                loc for loc in self.world.locations if loc["organizationId"] != organization_id
            ]
            self._remove_devices(lambda d: d["organizationId"] != organization_id)
            return self.stream.system_event(
                "CLIENT_DELETED", f"Organization {org['name']} was deleted"
            )

        return self._emit(change)

    def delete_location(self, location_id: int) -> dict[str, Any]:
        """Delete a location with its devices and send ``LOCATION_DELETED`` (which names
        no id; no event for each device)."""

        def change() -> dict[str, Any]:
            location = self.world.location(location_id)
            self.world.locations.remove(location)
            self._remove_devices(lambda d: d["locationId"] != location_id)
            return self.stream.system_event(
                "LOCATION_DELETED", f"Location {location['name']} was deleted"
            )

        return self._emit(change)

    def _payload(self, webhook: dict[str, Any], activity: dict[str, Any]) -> dict[str, Any]:
        payload = dict(activity)
        expand = set(webhook.get("expand") or [])
        device = (
            self.world.expanded_device(activity["deviceId"]) if "deviceId" in activity else None
        )
        if device is not None:
            if "device" in expand:
                payload["device"] = device
            if "organization" in expand:
                payload["organization"] = self.world.organization(device["organizationId"])
            if "location" in expand:
                payload["location"] = self.world.location(device["locationId"])
        return payload

    def _deliver(self, webhook: dict[str, Any], activity: dict[str, Any]) -> None:
        roll = self._delivery_rng.random()
        if roll < self.drop:
            self._record(Delivery(activity["id"], "dropped"))
            return
        copies = 2 if self._delivery_rng.random() < self.duplicate else 1
        body = json.dumps(self._payload(webhook, activity), separators=(",", ":")).encode()
        headers = {h["name"]: h["value"] for h in webhook.get("headers") or []}
        headers["Content-Type"] = "application/json"
        for _ in range(copies):
            try:
                response = self._http.post(webhook["url"], content=body, headers=headers)
                self._record(Delivery(activity["id"], "delivered", response.status_code))
            except httpx.HTTPError as exc:
                # Like NinjaOne: no retry; the activity stays only in the API's log.
                self._record(Delivery(activity["id"], "failed", None, exc.__class__.__name__))

    def _record(self, delivery: Delivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)
        log.info(
            "activity %d: %s%s",
            delivery.activity_id,
            delivery.outcome,
            f" ({delivery.status or delivery.detail})" if delivery.outcome != "dropped" else "",
        )

    @property
    def activity_ids(self) -> list[int]:
        """Every activity id the emulator has, oldest first."""
        with self._lock:
            return [a["id"] for a in self.activities]

    def inject(self, *faults: Fault) -> None:
        """Answer the next API requests (token endpoint included) with ``faults``, in order."""
        with self._lock:
            self._faults.extend(faults)

    # --- HTTP ---------------------------------------------------------------------------

    def asgi_app(self) -> Starlette:
        """The Starlette application."""
        return Starlette(
            routes=[
                Route("/ws/oauth/token", self._token, methods=["POST"]),
                Route("/api/v2/webhook", self._webhook_put, methods=["PUT"]),
                Route("/api/v2/webhook", self._webhook_delete, methods=["DELETE"]),
                Route("/api/v2/organizations", self._organizations, methods=["GET"]),
                Route("/api/v2/locations", self._locations, methods=["GET"]),
                Route("/api/v2/devices", self._devices, methods=["GET"]),
                Route("/api/v2/device/{id:int}", self._device_detail, methods=["GET"]),
                Route("/api/v2/organization/{id:int}", self._organization_detail, methods=["GET"]),
                Route(
                    "/api/v2/organization/{id:int}/locations",
                    self._organization_locations,
                    methods=["GET"],
                ),
                Route("/api/v2/activities", self._activities, methods=["GET"]),
                Route("/api/v2/alert/{uid}", self._alert_reset, methods=["DELETE"]),
                Route("/api/v2/alert/{uid}/reset", self._alert_reset, methods=["POST"]),
            ]
        )

    async def _fault(self) -> Response | None:
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        if fault is None:
            return None
        if fault.delay:
            import asyncio

            await asyncio.sleep(fault.delay)
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        return Response(fault.body, fault.status, headers=headers, media_type=fault.content_type)

    async def _token(self, request: Request) -> Response:
        with self._lock:
            self.token_requests += 1
        fault = await self._fault()
        if fault is not None:
            return fault
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        if not (
            secrets.compare_digest(form.get("client_id", ""), self.client_id)
            and secrets.compare_digest(form.get("client_secret", ""), self.client_secret)
        ):
            return JSONResponse({"error": "invalid_client"}, 401)
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(token)
        return JSONResponse(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "scope": form.get("scope", ""),
            }
        )

    async def _guard(self, request: Request) -> Response | None:
        with self._lock:
            self.api_requests.append(f"{request.method} {request.url.path}?{request.url.query}")
        fault = await self._fault()
        if fault is not None:
            return fault
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self._lock:
            valid = scheme.lower() == "bearer" and token in self._tokens
        if not valid:
            return JSONResponse({"resultCode": "UNAUTHORIZED"}, 401)
        return None

    def revoke_tokens(self) -> None:
        """Invalidate every issued access token (clients must fetch a new one)."""
        with self._lock:
            self._tokens.clear()

    async def _webhook_put(self, request: Request) -> Response:
        denied = await self._guard(request)
        if denied is not None:
            return denied
        if self.webhook_forbidden:
            return JSONResponse({"resultCode": "FORBIDDEN"}, 403)
        try:
            config = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"resultCode": "BAD_REQUEST", "error": "invalid JSON"}, 400)
        if not isinstance(config, dict) or not isinstance(config.get("url"), str):
            return JSONResponse({"resultCode": "BAD_REQUEST", "error": "url is required"}, 400)
        with self._lock:
            self.webhook = config
        return Response(status_code=204)

    async def _webhook_delete(self, request: Request) -> Response:
        denied = await self._guard(request)
        if denied is not None:
            return denied
        with self._lock:
            self.webhook = None
        return Response(status_code=204)

    async def _alert_reset(self, request: Request) -> Response:
        denied = await self._guard(request)
        if denied is not None:
            return denied
        uid = request.path_params["uid"]
        try:
            uuid.UUID(uid)
        except ValueError:
            return JSONResponse({"resultCode": "BAD_REQUEST", "error": "uid is not a UUID"}, 400)
        data: Any = None
        if request.method == "POST":
            raw = await request.body()
            try:
                data = json.loads(raw) if raw else None
            except ValueError:
                return JSONResponse({"resultCode": "BAD_REQUEST", "error": "invalid JSON"}, 400)
        with self._lock:
            self.alert_resets.append((uid, data))
        return Response(status_code=204)

    async def _list(self, request: Request, items: list[dict[str, Any]]) -> Response:
        denied = await self._guard(request)
        if denied is not None:
            return denied
        try:
            page_size = int(request.query_params.get("pageSize", "1000"))
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            return JSONResponse({"resultCode": "BAD_REQUEST", "error": "pageSize/after"}, 400)
        page = [i for i in sorted(items, key=lambda i: i["id"]) if i["id"] > after][
            : max(1, page_size)
        ]
        return JSONResponse(page)

    async def _organizations(self, request: Request) -> Response:
        return await self._list(request, self.world.organizations)

    async def _locations(self, request: Request) -> Response:
        return await self._list(request, self.world.locations)

    async def _devices(self, request: Request) -> Response:
        return await self._list(request, self.world.devices)

    @staticmethod
    def _not_found(what: str) -> Response:
        return JSONResponse({"resultCode": "NOT_FOUND", "error": f"{what} not found"}, 404)

    async def _device_detail(self, request: Request) -> Response:
        denied = await self._guard(request)
        if denied is not None:
            return denied
        with self._lock:
            device = self.world.expanded_device(request.path_params["id"])
        return self._not_found("device") if device is None else JSONResponse(device)

    def _organization_of(self, request: Request) -> dict[str, Any] | None:
        org_id = request.path_params["id"]
        return next((o for o in self.world.organizations if o["id"] == org_id), None)

    def _locations_of(self, org_id: int) -> list[dict[str, Any]]:
        # As NinjaOne's organization answers list them: without an organizationId.
        return [
            {k: v for k, v in loc.items() if k != "organizationId"}
            for loc in self.world.locations
            if loc["organizationId"] == org_id
        ]

    async def _organization_detail(self, request: Request) -> Response:
        denied = await self._guard(request)
        if denied is not None:
            return denied
        with self._lock:
            org = self._organization_of(request)
            if org is None:
                return self._not_found("organization")
            body = {**org, "locations": self._locations_of(org["id"]), "policies": []}
        return JSONResponse(body)

    async def _organization_locations(self, request: Request) -> Response:
        denied = await self._guard(request)
        if denied is not None:
            return denied
        with self._lock:
            org = self._organization_of(request)
            if org is None:
                return self._not_found("organization")
            body = self._locations_of(org["id"])
        return JSONResponse(body)

    async def _activities(self, request: Request) -> Response:
        denied = await self._guard(request)
        if denied is not None:
            return denied
        q = request.query_params
        try:
            page_size = int(q.get("pageSize", ACTIVITIES_PAGE_DEFAULT))
            newer = int(q["newerThan"]) if "newerThan" in q else None
            older = int(q["olderThan"]) if "olderThan" in q else None
        except ValueError:
            return JSONResponse({"resultCode": "BAD_REQUEST", "error": "not an integer"}, 400)
        if not ACTIVITIES_PAGE_MIN <= page_size <= ACTIVITIES_PAGE_MAX:
            return JSONResponse(
                {"resultCode": "BAD_REQUEST", "error": "pageSize must be between 10 and 1000"}, 400
            )
        with self._lock:
            selected = [
                a
                for a in self.activities
                if (newer is None or a["id"] > newer) and (older is None or a["id"] < older)
            ]
            last = self.activities[-1]["id"] if self.activities else None
        # NinjaOne answers newest first.
        page = sorted(selected, key=lambda a: a["id"], reverse=True)[:page_size]
        return JSONResponse({"lastActivityId": last, "activities": page})


def _wanted(webhook: dict[str, Any], activity: dict[str, Any]) -> bool:
    """Whether the webhook's ``activities`` filter selects ``activity`` (no filter: all)."""
    filters = webhook.get("activities")
    if not filters:
        return True
    statuses = filters.get(activity.get("activityType"))
    if not statuses:
        return False
    return "*" in statuses or activity.get("statusCode") in statuses
