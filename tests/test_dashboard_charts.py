"""The charts on the dashboard page: rendered with the page on every backend, escaped,
not part of the polled fragment, and drawn by headless Chromium on a desktop and a
phone (screenshots under build/)."""

from __future__ import annotations

import os
import re
import time
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest

from tests.support import (
    ROOT,
    WEBHOOK_HEADERS,
    body,
    condition_activity,
    deliver,
    minimal_activity,
)
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, browser_log_in, log_in

SCREENSHOTS = ROOT / "build"
HOSTILE_TYPE = '<img src=x onerror="alert(1)">&amp;'
SVG = "{http://www.w3.org/2000/svg}"


def some_history(now: float) -> list[dict[str, Any]]:
    """Activities of three types over the last two days and four alerts, one reset."""
    payloads: list[dict[str, Any]] = []
    for n in range(30):
        kind = ("SYSTEM", "ACTION", HOSTILE_TYPE)[n % 3]
        payloads.append(minimal_activity(100 + n, activityTime=now - n * 5400, activityType=kind))
    for n, severity in enumerate(("CRITICAL", "MAJOR", "MINOR", "MAJOR")):
        payloads.append(
            condition_activity(
                200 + n,
                series_uid=f"chart-{n}",
                severity=severity,
                activity_time=now - (n + 1) * 20 * 3600,
            )
        )
    payloads.append(
        condition_activity(
            300, status="RESET", series_uid="chart-3", severity=None, activity_time=now - 3600
        )
    )
    return payloads


def svg_elements(html: str) -> dict[str, ET.Element]:
    """Every inline chart on the page, parsed as XML, by id."""
    found = {}
    for text in re.findall(r"<svg class=\"chart\".*?</svg>", html, flags=re.S):
        root = ET.fromstring(text)
        found[root.get("id") or ""] = root
    return found


def test_the_dashboard_shows_both_charts_escaped(client: Any) -> None:
    for payload in some_history(time.time()):
        deliver(client, payload)
    log_in(client)
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    charts = svg_elements(html)
    assert set(charts) == {"chart-rate", "chart-open"}
    rate, opened = charts["chart-rate"], charts["chart-open"]
    # 30 activities and 3 of the alerts' activities (the others are older than 48 hours).
    assert "33 activities in the last 48 hours" in (rate.findtext(SVG + "desc") or "")
    assert len(rate.findall(SVG + "rect")) >= 30
    assert "3 alerts open now" in (opened.findtext(SVG + "desc") or "")
    assert [p.get("class") for p in opened.findall(SVG + "polygon")] == [
        "fill-critical",
        "fill-major",
        "fill-minor",
    ]
    # The sender's activityType is text everywhere: in the SVG and in the legend.
    assert HOSTILE_TYPE not in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&amp;amp;" in html
    legend = re.findall(r'<ul class="chart-legend">(.*?)</ul>', html, flags=re.S)
    assert len(legend) == 2
    assert "SYSTEM" in legend[0] and "ACTION" in legend[0]
    assert "CRITICAL" in legend[1]
    # The polled fragment does not carry the charts: polling costs no chart queries.
    assert "chart-rate" not in client.get("/ui/live").text


def test_an_empty_database_still_draws_both_charts(client: Any) -> None:
    log_in(client)
    charts = svg_elements(client.get("/").text)
    assert "No activities in the last 48 hours." in (
        charts["chart-rate"].findtext(SVG + "desc") or ""
    )
    assert "No alert was open in the last 7 days." in (
        charts["chart-open"].findtext(SVG + "desc") or ""
    )


def _box(page: Any, selector: str) -> dict[str, float]:
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not drawn"
    return dict(box)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")
def test_charts_in_headless_chromium_on_a_desktop_and_a_phone(server: Any) -> None:
    from playwright.sync_api import sync_playwright

    for payload in some_history(time.time()):
        r = httpx.post(
            server.url + "/webhooks/ninjarmm/activity",
            content=body(payload),
            headers=WEBHOOK_HEADERS,
        )
        assert r.status_code == 200, r.text
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            browser_log_in(page, server.url)
            for selector in ("svg#chart-rate", "svg#chart-open"):
                box = _box(page, selector)
                assert box["width"] > 300 and box["height"] > 150, (selector, box)
            # dashboard.css paints them: a type in the palette, a severity in its colour.
            fill = "el => getComputedStyle(el).fill"
            assert page.locator("svg#chart-rate rect.series-0").first.evaluate(fill) == (
                "rgb(0, 114, 178)"
            )
            assert page.locator("svg#chart-open polygon.fill-critical").evaluate(fill) == (
                "rgb(179, 18, 46)"
            )
            page.screenshot(path=str(SCREENSHOTS / "dashboard-charts.png"), full_page=True)

            page.set_viewport_size({"width": 390, "height": 844})  # a phone
            page.locator("svg#chart-open").scroll_into_view_if_needed()
            for selector in ("svg#chart-rate", "svg#chart-open"):
                box = _box(page, selector)
                assert 300 < box["width"] <= 390 and box["height"] > 150, (selector, box)
                assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (selector, box)
            legend = _box(page, "svg#chart-rate ~ ul.chart-legend")
            assert legend["x"] + legend["width"] <= 390
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
            page.screenshot(path=str(SCREENSHOTS / "dashboard-charts-phone.png"), full_page=True)
        finally:
            browser.close()
    for name in ("dashboard-charts.png", "dashboard-charts-phone.png"):
        assert (SCREENSHOTS / name).stat().st_size > 10_000
