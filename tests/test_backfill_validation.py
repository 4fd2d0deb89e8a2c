"""Backfill validates what NinjaOne's API returns exactly as a webhook body is validated.

An activity that fails is kept as a rejected delivery (its reason says it came from
backfill) and the checkpoint moves past it, so one odd activity cannot stop every
backfill at the same place; odd but valid content is stored like a webhook's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from app.ingest.validation import InvalidBody
from app.ninjaone.emulator import Emulator
from app.ninjaone.sync import BACKFILL_CHECKPOINT, checked_activity, wire_form
from app.storage import entities as entity_store
from app.storage.tables import activities, rejected_deliveries
from tests.support import API_HEADERS, free_port, ninjaone_env, run_cli


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(seed=11, history=5) as emu:
        yield emu


@pytest.fixture
def env(emulator: Emulator, settings: dict[str, Any]) -> dict[str, str]:
    return ninjaone_env(emulator, settings)


def configure_unreachable(env: dict[str, str]) -> None:
    """Point the webhook at a closed port: every delivery fails, backfill must recover."""
    result = run_cli(["configure", "--url", f"http://127.0.0.1:{free_port()}", "--allow-http"], env)
    assert result.exit_code == 0, result.output


def serve(emulator: Emulator, **changes: Any) -> dict[str, Any]:
    """Have the emulator's API serve its next activity with ``changes`` applied."""
    with emulator._lock:
        activity = emulator.stream.next()
        activity.update(changes)
        emulator.activities.append(activity)
    return activity


def stored_ids(state: Any) -> list[int]:
    with state.db.connect() as conn:
        return sorted(conn.execute(sa.select(activities.c.id)).scalars())


def rejected(state: Any) -> list[Any]:
    with state.db.connect() as conn:
        return list(conn.execute(sa.select(rejected_deliveries).order_by(rejected_deliveries.c.id)))


def test_an_invalid_activity_is_kept_as_rejected_and_backfill_moves_past_it(
    emulator: Emulator, env: dict[str, str], state: Any
) -> None:
    configure_unreachable(env)
    before = emulator.produce(3)
    bad = serve(emulator, deviceId="not-a-number")
    worse = serve(emulator, activityTime={"when": "yesterday"})
    after = emulator.produce(3)

    result = run_cli(["backfill", "--page-size", "10"], env)
    assert result.exit_code == 0, result.output
    assert "backfill: 8 fetched, 6 new, 0 already stored, 2 rejected (kept)" in result.stdout
    assert stored_ids(state) == sorted(a["id"] for a in before + after)

    kept = rejected(state)
    assert [(r.field, r.content_type) for r in kept] == [
        ("deviceId", "application/json"),
        ("activityTime", "application/json"),
    ]
    assert kept[0].reason == (
        f"backfill: activity {bad['id']} from NinjaOne's API: deviceId: must be integer or null"
    )
    assert kept[1].reason.startswith(f"backfill: activity {worse['id']} from NinjaOne's API: ")
    assert bytes(kept[0].body) == json.dumps(bad, separators=(",", ":")).encode()
    with state.db.connect() as conn:
        assert entity_store.get_checkpoint(conn, BACKFILL_CHECKPOINT) == after[-1]["id"]

    # The next backfill starts after them: nothing is fetched or kept twice.
    again = run_cli(["backfill"], env)
    assert again.exit_code == 0, again.output
    assert "backfill: 0 fetched, 0 new, 0 already stored" in again.stdout
    assert len(rejected(state)) == 2


def test_the_rejected_activity_is_listed_by_the_read_api(
    emulator: Emulator, env: dict[str, str], client: Any
) -> None:
    configure_unreachable(env)
    serve(emulator, userId=2**40)
    assert run_cli(["backfill"], env).exit_code == 0
    r = client.get("/rejected", headers=API_HEADERS)
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    assert item["field"] == "userId"
    assert item["reason"].startswith("backfill: activity ")


def test_odd_but_valid_content_is_stored_like_a_webhooks(
    emulator: Emulator, env: dict[str, str], state: Any
) -> None:
    configure_unreachable(env)
    odd = serve(
        emulator,
        activityType="CONDITION",
        statusCode="TRIGGERED",
        message="disk\u0000full",
        seriesUid="s" * 5000,
        sourceName="n" * 3000,
        activityTime=1e308,
    )
    result = run_cli(["backfill"], env)
    assert result.exit_code == 0, result.output
    assert "1 new" in result.stdout and "rejected" not in result.stdout
    with state.db.connect() as conn:
        row = conn.execute(sa.select(activities).where(activities.c.id == odd["id"])).one()
    assert row.source == "backfill"
    assert bytes(row.raw) == wire_form(odd)
    assert row.message == "disk\ufffdfull"
    assert len(row.series_uid) == 300 and len(row.source_name) == 500
    assert row.activity_time == 1e308


def test_what_json_cannot_carry_is_named_before_it_is_written() -> None:
    overflowed = {"id": 1, "data": {"x": [float("inf")]}}
    with pytest.raises(InvalidBody) as caught:
        checked_activity(overflowed, wire_form(overflowed))
    assert caught.value.field == "data.x.0"
    # A lone surrogate cannot be UTF-8: it is written as the escape, and stored.
    lone = {"id": 2, "message": "x\ud800"}
    raw = wire_form(lone)
    assert raw == b'{"id":2,"message":"x\\ud800"}'
    assert checked_activity(lone, raw) == lone
