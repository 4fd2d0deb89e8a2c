"""A client for NinjaOne's Public API v2, built on httpx.

OAuth2 client credentials at ``<base>/ws/oauth/token`` (the token is cached until
shortly before it expires), the API under ``<base>/api/v2/...``, NinjaOne's
cursor pagination, retries with backoff on 429 and 5xx (honouring Retry-After),
and one-line errors that name the cause. Secrets never appear in an error.
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from app import tracing
from app.config import Config

log = logging.getLogger(__name__)

REGIONS: dict[str, str] = {
    "app": "https://app.ninjarmm.com",
    "us2": "https://us2.ninjarmm.com",
    "eu": "https://eu.ninjarmm.com",
    "ca": "https://ca.ninjarmm.com",
    "oc": "https://oc.ninjarmm.com",
}
TOKEN_PATH = "/ws/oauth/token"
SCOPE = "monitoring management"
# A token is renewed this many seconds before NinjaOne says it expires, so that a
# request never leaves with a token that expires on the way.
TOKEN_EXPIRY_MARGIN = 30.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class NinjaOneError(Exception):
    """A NinjaOne API call failed; the message is one line that names the cause."""


class NinjaOneAuthError(NinjaOneError):
    """NinjaOne rejected the client credentials or the access token (401)."""


class NinjaOneForbidden(NinjaOneError):
    """NinjaOne refused the operation for this API client (403)."""


class NinjaOneNotConfigured(NinjaOneError):
    """The NinjaOne settings are missing or invalid."""


class NinjaOneNotFound(NinjaOneError):
    """NinjaOne answered 404: the resource does not exist (any more)."""


class RateLimiter:
    """At most ``rate`` requests per second (a burst of up to one second's worth), shared
    by every client of a process; :meth:`pause` holds every caller back (a 429's
    Retry-After).

    :param clock: / :param sleep: injectable for tests.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self.clock = clock
        self.sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for a slot; returns the seconds waited."""
        waited = 0.0
        with self._lock:
            while True:
                now = self.clock()
                if now < self._paused_until:
                    wait = self._paused_until - now
                    self.sleep(wait)
                    waited += wait
                    continue
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                # Wait for the missing fraction of a token, and spend that token.
                wait = (1.0 - self._tokens) / self.rate
                self.sleep(wait)
                self._tokens = 0.0
                self._stamp = now + wait
                return waited + wait

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (from now), whoever asks."""
        with self._lock:
            self._paused_until = max(self._paused_until, self.clock() + seconds)


_limiters: dict[float, RateLimiter] = {}
_limiters_lock = threading.Lock()


def shared_limiter(rate: float) -> RateLimiter:
    """This process's limiter for ``rate`` (NINJAHOOK_NINJAONE_RATE): one per process, so
    that the server's background fetches, sync and backfill share one budget."""
    with _limiters_lock:
        limiter = _limiters.get(rate)
        if limiter is None:
            limiter = _limiters[rate] = RateLimiter(rate)
        return limiter


@dataclass(frozen=True)
class Credentials:
    """Where NinjaOne is and how to authenticate. ``repr`` hides the secret."""

    base_url: str
    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return (
            f"Credentials(base_url={self.base_url!r}, client_id=<hidden>, client_secret=<hidden>)"
        )


def base_url(config: Config) -> str:
    """The NinjaOne base URL from NINJAONE_BASE_URL, else NINJAONE_REGION.

    :raises NinjaOneNotConfigured: naming the variable when neither is usable.
    """
    url = str(config.ninjaone_base_url or "").strip().rstrip("/")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise NinjaOneNotConfigured(
                f"NINJAONE_BASE_URL: expected an http(s) URL such as https://eu.ninjarmm.com, "
                f"got {url!r}"
            )
        return url
    region = str(config.ninjaone_region or "").strip().lower()
    if not region:
        raise NinjaOneNotConfigured(
            "NinjaOne is not configured: set NINJAONE_REGION (app, us2, eu, ca or oc) "
            "or NINJAONE_BASE_URL"
        )
    if region not in REGIONS:
        raise NinjaOneNotConfigured(
            f"NINJAONE_REGION: expected one of {', '.join(REGIONS)}, got {region!r}"
        )
    return REGIONS[region]


def credentials_configured(config: Config) -> bool:
    """True when a client id and secret are set (the base URL is checked when used)."""
    return bool(config.ninjaone_client_id and config.ninjaone_client_secret)


def credentials(config: Config) -> Credentials:
    """Validated credentials from the settings.

    :raises NinjaOneNotConfigured: naming the missing or invalid variable.
    """
    url = base_url(config)
    missing = [
        env
        for env, value in (
            ("NINJAONE_CLIENT_ID", config.ninjaone_client_id),
            ("NINJAONE_CLIENT_SECRET", config.ninjaone_client_secret),
        )
        if not value
    ]
    if missing:
        raise NinjaOneNotConfigured(f"NinjaOne is not configured: set {' and '.join(missing)}")
    return Credentials(url, str(config.ninjaone_client_id), str(config.ninjaone_client_secret))


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe_transport_error(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        cause = str(exc).splitlines()[0] if str(exc) else "connection failed"
        return f"cannot connect ({cause})"
    return f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}"


class NinjaOneClient:
    """NinjaOne Public API v2 over one pooled httpx client. Use it as a context manager.

    :param creds: base URL, client id and secret.
    :param timeout: seconds for each request (connect, read, write).
    :param max_retries: extra attempts after a 429 or a 5xx.
    :param transport_retries: extra attempts after a timeout or a refused connection (fewer:
        an unreachable host rarely comes back within seconds, and the user is waiting).
    :param backoff: the first wait in seconds; it doubles per attempt up to ``max_backoff``.
        A Retry-After header replaces the computed wait (capped at ``max_backoff``).
    :param sleep: how to wait (tests pass a recorder).
    :param limiter: paces every request (the token request included) and is paused by
        a 429's Retry-After; :meth:`from_config` passes the process's shared limiter.
    """

    def __init__(
        self,
        creds: Credentials,
        *,
        timeout: float = 30.0,
        max_retries: int = 4,
        transport_retries: int = 2,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.creds = creds
        self.limiter = limiter
        self.max_retries = max_retries
        self.transport_retries = transport_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.http = httpx.Client(
            base_url=creds.base_url,
            timeout=timeout,
            headers={"Accept": "application/json", "User-Agent": "ninjahook"},
        )
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> NinjaOneClient:
        """A client for the configured NinjaOne, paced by the process's shared limiter
        (NINJAHOOK_NINJAONE_RATE); raises :class:`NinjaOneNotConfigured`."""
        kwargs.setdefault("limiter", shared_limiter(float(config.ninjaone_rate)))
        return cls(credentials(config), **kwargs)

    def __enter__(self) -> NinjaOneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    # --- transport ----------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request; a client span when tracing is on (app.tracing)."""
        if not tracing.active():
            return self.http.request(method, path, **kwargs)
        attributes = {
            "http.request.method": method,
            "url.path": path,
            "server.address": self.http.base_url.host,
        }
        with tracing.client_span(f"NinjaOne {method}", attributes) as span:
            response = self.http.request(method, path, **kwargs)
            tracing.record_outcome(span, response.status_code < 400, response.status_code)
            return response

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request with retries on 429, 5xx and transport errors."""
        attempt = 0
        while True:
            if self.limiter is not None:
                self.limiter.acquire()
            try:
                response = self._request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= min(self.max_retries, self.transport_retries):
                    raise NinjaOneError(
                        f"{method} {self.creds.base_url}{path}: {_describe_transport_error(exc)} "
                        f"after {attempt + 1} attempt(s)"
                    ) from None
                wait = min(self.max_backoff, self.backoff * 2**attempt)
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
                    return response
                hinted = _retry_after(response)
                if response.status_code == 429 and hinted is not None and self.limiter:
                    # NinjaOne asked this client to slow down: so does every other caller.
                    self.limiter.pause(min(self.max_backoff, hinted))
                wait = min(
                    self.max_backoff,
                    hinted if hinted is not None else self.backoff * 2**attempt,
                )
                log.info(
                    "NinjaOne %s %s answered %s; retrying in %.1fs",
                    method,
                    path,
                    response.status_code,
                    wait,
                )
            attempt += 1
            self.sleep(wait)

    def _json(self, method: str, path: str, response: httpx.Response) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            kind = response.headers.get("Content-Type", "no content type").split(";")[0]
            raise NinjaOneError(
                f"{method} {path}: NinjaOne answered {response.status_code} with non-JSON "
                f"({kind}); is {self.creds.base_url} a NinjaOne instance?"
            ) from None

    def access_token(self) -> str:
        """A valid access token, fetched with the client credentials when none is cached."""
        with self._token_lock:
            if self._token and time.monotonic() < self._token_expires:
                return self._token
            response = self._send(
                "POST",
                TOKEN_PATH,
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.creds.client_id,
                    "client_secret": self.creds.client_secret,
                    "scope": SCOPE,
                },
            )
            if response.status_code in {400, 401, 403}:
                raise NinjaOneAuthError(
                    f"NinjaOne rejected the client credentials ({response.status_code} from "
                    f"{TOKEN_PATH}{self._oauth_error(response)}): check NINJAONE_CLIENT_ID, "
                    "NINJAONE_CLIENT_SECRET and the region or base URL"
                )
            self._raise_for_status("POST", TOKEN_PATH, response)
            body = self._json("POST", TOKEN_PATH, response)
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise NinjaOneError(f"POST {TOKEN_PATH}: the answer has no access_token")
            expires_in = body.get("expires_in")
            lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
            self._token = token
            self._token_expires = time.monotonic() + max(0.0, lifetime - TOKEN_EXPIRY_MARGIN)
            return token

    @staticmethod
    def _oauth_error(response: httpx.Response) -> str:
        # OAuth error codes ("invalid_client") are safe to show; descriptions may echo input.
        try:
            code = response.json().get("error")
        except Exception:
            return ""
        return f": {code}" if isinstance(code, str) and code.isidentifier() else ""

    def _raise_for_status(self, method: str, path: str, response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        what = f"{method} {path}"
        if status == 401:
            raise NinjaOneAuthError(
                f"{what}: NinjaOne answered 401 Unauthorized: the access token was refused; "
                "check the API client's credentials and its scopes (monitoring, management)"
            )
        if status == 403:
            if path.rstrip("/").endswith("/v2/webhook"):
                raise NinjaOneForbidden(
                    f"{what}: NinjaOne answered 403 Forbidden: only system administrators can "
                    "configure webhooks; give the API client's user system-administrator rights"
                )
            raise NinjaOneForbidden(
                f"{what}: NinjaOne answered 403 Forbidden: the API client lacks permission "
                "(it needs the monitoring and management scopes)"
            )
        if status == 404:
            raise NinjaOneNotFound(f"{what}: NinjaOne answered 404 Not Found")
        if status in RETRY_STATUSES:
            raise NinjaOneError(
                f"{what}: NinjaOne answered {status} after {self.max_retries + 1} attempt(s)"
            )
        raise NinjaOneError(f"{what}: NinjaOne answered {status}")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
    ) -> httpx.Response:
        """An authenticated API request; ``path`` starts at ``/v2``. Raises on 4xx/5xx.

        A 401 drops the cached token and tries once more with a fresh one (a token
        can be revoked before its announced expiry).
        """
        full = f"/api{path}"
        for attempt in range(2):
            token = self.access_token()
            response = self._send(
                method,
                full,
                params={k: v for k, v in (params or {}).items() if v is not None},
                json=json_body,
                headers={"Authorization": f"Bearer {token}"},
            )
            if response.status_code == 401 and attempt == 0:
                with self._token_lock:
                    self._token = None
                continue
            self._raise_for_status(method, path, response)
            return response
        raise AssertionError("unreachable")

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``path`` and decode its JSON."""
        return self._json("GET", path, self.request("GET", path, params=params))

    # --- resources ----------------------------------------------------------------------

    def paginate(self, path: str, *, page_size: int = 200) -> Iterator[list[dict[str, Any]]]:
        """Pages of a list endpoint that pages with ``pageSize`` and ``after`` (the last id)."""
        after: int | None = None
        while True:
            page = self.get_json(path, {"pageSize": page_size, "after": after})
            if not isinstance(page, list):
                raise NinjaOneError(f"GET {path}: expected a JSON array, got {type(page).__name__}")
            items = [item for item in page if isinstance(item, dict)]
            if items:
                yield items
            ids = [i["id"] for i in items if isinstance(i.get("id"), int)]
            if len(page) < page_size or not ids:
                return
            after = max(ids)

    def organizations(self, *, page_size: int = 200) -> Iterator[list[dict[str, Any]]]:
        """Pages of ``/v2/organizations``."""
        return self.paginate("/v2/organizations", page_size=page_size)

    def locations(self, *, page_size: int = 200) -> Iterator[list[dict[str, Any]]]:
        """Pages of ``/v2/locations``."""
        return self.paginate("/v2/locations", page_size=page_size)

    def devices(self, *, page_size: int = 200) -> Iterator[list[dict[str, Any]]]:
        """Pages of ``/v2/devices``."""
        return self.paginate("/v2/devices", page_size=page_size)

    def device(self, device_id: int) -> dict[str, Any] | None:
        """``GET /v2/device/{id}``; None when NinjaOne answers 404."""
        return self._object(f"/v2/device/{int(device_id)}")

    def organization(self, organization_id: int) -> dict[str, Any] | None:
        """``GET /v2/organization/{id}``; None when NinjaOne answers 404."""
        return self._object(f"/v2/organization/{int(organization_id)}")

    def organization_locations(self, organization_id: int) -> list[dict[str, Any]] | None:
        """``GET /v2/organization/{id}/locations``; None when NinjaOne answers 404."""
        path = f"/v2/organization/{int(organization_id)}/locations"
        try:
            body = self.get_json(path)
        except NinjaOneNotFound:
            return None
        if not isinstance(body, list):
            raise NinjaOneError(f"GET {path}: expected a JSON array, got {type(body).__name__}")
        return [item for item in body if isinstance(item, dict)]

    def _object(self, path: str) -> dict[str, Any] | None:
        try:
            body = self.get_json(path)
        except NinjaOneNotFound:
            return None
        if not isinstance(body, dict):
            raise NinjaOneError(f"GET {path}: expected a JSON object, got {type(body).__name__}")
        return body

    def activities_page(
        self,
        *,
        newer_than: int | None = None,
        older_than: int | None = None,
        page_size: int = 200,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of ``/v2/activities`` (newest first) and the account's ``lastActivityId``."""
        body = self.get_json(
            "/v2/activities",
            {"newerThan": newer_than, "olderThan": older_than, "pageSize": page_size},
        )
        if not isinstance(body, dict) or not isinstance(body.get("activities", []), list):
            raise NinjaOneError("GET /v2/activities: expected an object with an activities array")
        items = [a for a in body.get("activities", []) if isinstance(a, dict)]
        last = body.get("lastActivityId")
        return items, last if isinstance(last, int) else None

    def activities(
        self,
        *,
        newer_than: int | None = None,
        since: float | None = None,
        page_size: int = 200,
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of activities, newest first, walking back with ``olderThan``.

        Stops below ``newer_than`` (an activity id; NinjaOne filters) and below
        ``since`` (epoch seconds; filtered here, since NinjaOne pages by id).
        """
        older_than: int | None = None
        while True:
            items, _last = self.activities_page(
                newer_than=newer_than, older_than=older_than, page_size=page_size
            )
            ids = [a["id"] for a in items if isinstance(a.get("id"), int)]
            if since is not None:
                kept = [a for a in items if (a.get("activityTime") or 0) >= since]
                if kept:
                    yield kept
                if len(kept) < len(items):
                    return
            elif items:
                yield items
            if len(items) < page_size or not ids:
                return
            older_than = min(ids)

    def last_activity_id(self) -> int | None:
        """The newest activity id of the account (``lastActivityId``)."""
        items, last = self.activities_page(page_size=10)
        ids = [a["id"] for a in items if isinstance(a.get("id"), int)]
        return last if last is not None else (max(ids) if ids else None)

    def configure_webhook(self, configuration: dict[str, Any]) -> None:
        """``PUT /v2/webhook`` with a WebhookConfiguration."""
        self.request("PUT", "/v2/webhook", json_body=configuration)

    def disable_webhook(self) -> None:
        """``DELETE /v2/webhook``."""
        self.request("DELETE", "/v2/webhook")

    def reset_alert(self, uid: str) -> None:
        """``DELETE /v2/alert/{uid}``: reset a condition (its uid is the seriesUid of its
        activities); NinjaOne then reports the RESET like any other."""
        self.request("DELETE", f"/v2/alert/{quote(uid, safe='')}")
