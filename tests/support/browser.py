"""The dashboard as a user reaches it: logging in through the form (in-process client or
headless Chromium), and how Chromium is launched (Debian's /usr/bin/chromium through
playwright, no sandbox: tests run as root in containers)."""

from __future__ import annotations

import re
from typing import Any

from tests.support.receiver import API_TOKEN

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def form_csrf(client: Any, path: str = "/") -> str:
    """The form token of the page at ``path`` (the login form's without a session, the
    logout form's with one), as a browser would post it."""
    match = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert match is not None, f"no form token on {path}"
    return match.group(1)


def log_in(client: Any) -> None:
    """Log in through the login form, as a browser does."""
    r = client.post(
        "/login", data={"token": API_TOKEN, "csrf": form_csrf(client)}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/"


def browser_log_in(page: Any, url: str) -> None:
    """Open the dashboard at ``url`` in a playwright page and log in through its form."""
    page.goto(url + "/")
    page.fill("#token", API_TOKEN)
    page.click("form.login button[type=submit]")
    page.wait_for_selector("#live")
