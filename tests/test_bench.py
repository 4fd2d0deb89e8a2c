"""The benchmark's own parts: bodies, wrk's report, the load generator, BENCHMARKS.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import load
from bench.__main__ import BEGIN, END, write_section
from tests.support import INGEST_PATH, WEBHOOK_HEADERS, WEBHOOK_TOKEN

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8080
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     8.36ms    4.79ms  61.27ms   80.13%
    Req/Sec     0.98k   123.45     1.30k    70.00%
  Latency Distribution
     50%  750.00us
     75%   10.02ms
     90%   13.90ms
     99%    1.20s
  19532 requests in 10.01s, 3.35MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   1951.27
Transfer/sec:    342.41KB
"""


def test_wrk_report_is_read_with_units_and_errors() -> None:
    result = load.parse_wrk(WRK_OUTPUT, 10)
    assert result.requests == 19532
    assert result.rps == pytest.approx(1951.27)
    assert result.p50_ms == pytest.approx(0.75)
    assert result.p99_ms == pytest.approx(1200.0)
    assert result.errors == 4 + 2 + 1


def test_an_unreadable_wrk_report_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="could not read wrk"):
        load.parse_wrk("wrk: connection refused\n", 10)


def test_bodies_are_ninjaone_shaped_about_1kb_and_distinct(client: Any, state: Any) -> None:
    template = load.activity_template()
    first, second = load.render(template, 11), load.render(template, 10**13 + 12)
    assert 1000 <= len(first) <= 1100
    one, two = json.loads(first), json.loads(second)
    assert (one["id"], two["id"]) == (11, 10**13 + 12)
    assert one["seriesUid"] != two["seriesUid"]
    assert one["seriesUid"].endswith("000000000011")
    for raw in (first, second):
        r = client.post(INGEST_PATH, content=raw, headers=WEBHOOK_HEADERS)
        assert r.status_code == 200, r.text
        assert r.json()["duplicate"] is False


def test_python_generator_and_storm_store_every_activity_once(server: Any, state: Any) -> None:
    from app.storage.activities import count_activities

    template = load.activity_template()
    timed = load.run_python(
        server.port, template, WEBHOOK_TOKEN, seconds=0.5, connections=4, id_base=1
    )
    assert timed.requests > 0 and timed.errors == 0
    assert timed.statuses == {200: timed.requests}
    storm = load.storm(server.port, template, WEBHOOK_TOKEN, first_id=10**9, count=120, senders=8)
    assert storm.statuses == {200: 120} and storm.retries == 0
    with state.db.connect() as conn:
        assert count_activities(conn) == timed.requests + 120


def test_writing_keeps_other_sections(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Query\n\nquery figures\n")
    write_section("## Ingest\n\nfirst\n", path)
    text = path.read_text()
    assert text.index(BEGIN) < text.index("first") < text.index(END) < text.index("## Query")
    write_section("## Ingest\n\nsecond\n", path)
    text = path.read_text()
    assert "first" not in text and "second" in text
    assert text.count(BEGIN) == 1 and "query figures" in text
