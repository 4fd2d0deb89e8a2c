"""Where a message points: the alert (or activity) on the dashboard, the device in NinjaOne."""

from __future__ import annotations

from typing import Any

from app.alerts.service import alert_ref
from app.config import Config

# A device's page in NinjaOne, under the region's base URL (as the dashboard links it).
NINJAONE_DEVICE_PATH = "/#/deviceDashboard/{id}/overview"
# NinjaOne's regions, each at https://<region>.ninjarmm.com: app.ninjaone.client.REGIONS,
# which this package cannot import (app.ninjaone reaches app.notifications through
# app.metrics); tests/test_email_threading.py keeps the two in step.
NINJAONE_REGIONS = ("app", "us2", "eu", "ca", "oc")


def ninjaone_base(config: Config) -> str | None:
    """NINJAONE_BASE_URL, else NINJAONE_REGION's host; None when neither is usable."""
    url = str(config.ninjaone_base_url or "").strip().rstrip("/")
    if url:
        return url if url.startswith(("http://", "https://")) else None
    region = str(config.ninjaone_region or "").strip().lower()
    return f"https://{region}.ninjarmm.com" if region in NINJAONE_REGIONS else None


def message_links(
    config: Config, *, alert_key: str | None, activity_id: int | None, device_id: Any
) -> dict[str, str | None]:
    """``{"alert": …, "device": …}``: the alert's page on the dashboard under
    NINJAHOOK_PUBLIC_URL (the activity's page for an activity without an alert), and the
    device's page in NinjaOne (NINJAONE_BASE_URL or NINJAONE_REGION). None where the
    setting it needs is unset."""
    public = config.public_url
    alert: str | None = None
    if public and alert_key is not None:
        alert = f"{public}/ui/alerts/{alert_ref(alert_key)}"
    elif public and activity_id is not None:
        alert = f"{public}/ui/activities/{int(activity_id)}"
    device: str | None = None
    base = ninjaone_base(config)
    if base and isinstance(device_id, int) and not isinstance(device_id, bool):
        device = base + NINJAONE_DEVICE_PATH.format(id=device_id)
    return {"alert": alert, "device": device}


def mail_domain(config: Config) -> str | None:
    """NINJAHOOK_MAIL_DOMAIN, else NINJAHOOK_PUBLIC_URL's host; None when neither is set
    (the destination's from address then gives the domain)."""
    if config.mail_domain:
        return str(config.mail_domain)
    if config.public_url:
        host = config.public_url.split("://", 1)[-1].split("/", 1)[0]
        return host.rsplit(":", 1)[0].strip("[]").lower() or None
    return None
