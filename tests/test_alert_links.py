"""Alerts open whatever their key holds: `/`, `%`, `?`, `#`, spaces, non-ASCII.

A key is NinjaOne's seriesUid, or ``<deviceId>:<sourceConfigUid>``; a ``/`` in a path
segment (also as %2F, decoded before routing) never reaches /alerts/{key}. Lists give each
alert a ``ref`` that holds only URL-safe characters, and the dashboard links by it.
"""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import pytest

from app.alerts.service import alert_ref, keys_for
from tests.support import API_HEADERS, API_TOKEN, condition_activity, deliver

ODD_SERIES = [
    "series/with/slashes",
    "/leading-and-trailing/",
    "50%off%2F",
    "what?now=1&x",
    "hash#tag",
    "with spaces here",
    "ünïcødé/ключ/🔔",
    "a+b=c~d",
]
# No seriesUid: the key is <deviceId>:<sourceConfigUid>, and this one holds a slash.
FALLBACK_SOURCE = "policy/disk free"
FALLBACK_KEY = f"42:{FALLBACK_SOURCE}"
PLAIN_SERIES = "0c7ed5a2-4c28-4e9c-8b43-8d4d3b0f2f99"


def _seed(server: Any) -> list[str]:
    """Open one alert per odd key (plus a plain one); returns every key."""
    with httpx.Client(base_url=server.url) as http:
        for n, series in enumerate([*ODD_SERIES, PLAIN_SERIES], start=1):
            deliver(http, condition_activity(n, series_uid=series, message=f"alert {n}"))
        fallback = condition_activity(
            100, seriesUid=None, sourceConfigUid=FALLBACK_SOURCE, message="fallback alert"
        )
        deliver(http, fallback)
    return [*ODD_SERIES, PLAIN_SERIES, FALLBACK_KEY]


def test_refs_use_only_unreserved_characters_and_round_trip() -> None:
    for key in [*ODD_SERIES, FALLBACK_KEY, PLAIN_SERIES, "", "~", "~abc"]:
        ref = alert_ref(key)
        assert re.fullmatch(r"~[A-Za-z0-9_-]*", ref), ref
        assert keys_for(ref)[0] == key
    # A plain key is still tried as itself (the old links without a slash keep working).
    assert keys_for(PLAIN_SERIES) == [PLAIN_SERIES]
    # Something that merely starts with "~" but is no canonical ref is taken literally.
    assert keys_for("~not a ref") == ["~not a ref"]


def test_every_alert_opens_through_the_read_api_by_its_ref(server: Any) -> None:
    keys = _seed(server)
    with httpx.Client(base_url=server.url, headers=API_HEADERS) as http:
        page = http.get("/alerts", params={"limit": 100}).json()
        listed = {item["key"]: item["ref"] for item in page["items"]}
        assert sorted(listed) == sorted(keys)
        for key, ref in listed.items():
            assert ref == alert_ref(key)
            r = http.get(f"/alerts/{ref}")
            assert r.status_code == 200, (key, r.text)
            detail = r.json()
            assert detail["key"] == key  # the key field is unchanged
            assert detail["ref"] == ref
            assert [a["seriesUid"] for a in detail["history"]] == (
                [None] if key == FALLBACK_KEY else [key]
            )
        # A key without "/" still opens as itself.
        plain = http.get(f"/alerts/{PLAIN_SERIES}")
        assert plain.status_code == 200 and plain.json()["key"] == PLAIN_SERIES
        # The ref of a key nobody has is a 404 problem, not a 500.
        missing = http.get(f"/alerts/{alert_ref('no/such/alert')}")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")


def _login(http: httpx.Client) -> None:
    """Log in through the login form, as a browser does (with its form token, when the
    form carries one)."""
    form = http.get("/").text
    data = {"token": API_TOKEN}
    match = re.search(r'name="csrf" value="([^"]+)"', form)
    if match is not None:
        data["csrf"] = html.unescape(match.group(1))
    r = http.post("/login", data=data, follow_redirects=False)
    assert r.status_code == 303


def test_every_alert_opens_from_the_dashboard_link_on_the_index_page(server: Any) -> None:
    keys = _seed(server)
    with httpx.Client(base_url=server.url) as http:
        _login(http)
        index = http.get("/")
        assert index.status_code == 200
        links = {
            html.unescape(key): html.unescape(href)
            for key, href in re.findall(
                r'<li class="alert [^"]*" data-key="([^"]*)">\s*<a href="([^"]*)">', index.text
            )
        }
        assert sorted(links) == sorted(keys)
        for key, href in links.items():
            assert href.startswith("/ui/alerts/~")
            page = http.get(href)
            assert page.status_code == 200, (key, href)
            assert f"<code>{html.escape(key)}</code>" in page.text


@pytest.mark.parametrize("series", ["series/with/slashes", "hash#tag", "ünïcødé/ключ/🔔"])
def test_the_activity_page_links_to_its_alert(server: Any, series: str) -> None:
    with httpx.Client(base_url=server.url) as http:
        deliver(http, condition_activity(7, series_uid=series))
        _login(http)
        activity = http.get("/ui/activities/7")
        assert activity.status_code == 200
        (href,) = re.findall(r'<a href="(/ui/alerts/[^"]*)">', activity.text)
        page = http.get(html.unescape(href))
        assert page.status_code == 200
        assert f"<code>{html.escape(series)}</code>" in page.text
