"""Prepared statements: what Connection.execute did, without its per-execution work.

Same results and types, the same wrapped exceptions, the same transaction, and the
statements still visible to whoever records them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.ingest.service import ingest_activity
from app.state import AppState
from app.storage import activities as store
from app.storage import alerts as alert_store
from app.storage import prepared
from app.storage.db import Database, normalize_url
from app.storage.prepared import Prepared
from app.storage.tables import activities, alert_activities, alerts
from tests.support import PG_ADMIN_URL, body, condition_activity, recorded_statements


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def activity(activity_id: int, **columns: Any) -> dict[str, Any]:
    """Every column insert_activity receives from ingest."""
    row: dict[str, Any] = {column.key: None for column in activities.c}
    row.update(id=activity_id, source="webhook", received_at=1764300000.25, raw=b"{}")
    row.update(columns)
    return row


def alert_row(db: Database, key: str) -> dict[str, Any]:
    """The alert's columns (but its key) read with a plain Core SELECT."""
    columns = [c for c in alerts.c if c.name != "key"]
    with db.connect() as conn:
        return dict(conn.execute(sa.select(*columns).where(alerts.c.key == key)).mappings().one())


def count(db: Database, table: sa.Table) -> int:
    with db.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)


def test_insert_activity_is_new_then_a_duplicate(db: Database) -> None:
    with db.begin() as conn:
        assert store.insert_activity(conn, activity(10, message="first")) is True
        # Within the same transaction as well as after the commit.
        assert store.insert_activity(conn, activity(10, message="again")) is False
    with db.begin() as conn:
        assert store.insert_activity(conn, activity(10, message="later")) is False
    with db.connect() as conn:
        row = store.get_activity(conn, 10)
    assert row is not None and row.message == "first" and bytes(row.raw) == b"{}"
    assert row.received_at == pytest.approx(1764300000.25)
    assert count(db, activities) == 1


def test_lock_alert_returns_what_a_core_select_reads(db: Database) -> None:
    with db.begin() as conn:
        fresh = dict(alert_store.lock_alert(conn, "fresh"))
    assert fresh == alert_row(db, "fresh")
    assert fresh["state"] == "closed" and fresh["acknowledged"] is False
    assert fresh["opened_at"] is None and fresh["last_activity_id"] is None

    values = {
        "state": "open",
        "acknowledged": True,
        "device_id": 42,
        "organization_id": 7,
        "location_id": 9,
        "severity": "MAJOR",
        "priority": "HIGH",
        "activity_type": "CONDITION",
        "source_name": "Disk Free Space < 10%",
        "message": "C: has 8% free space",
        "opened_at": 1764300000.5,
        "closed_at": None,
        "last_activity_time": 1764300060.75,
        "last_activity_id": 2**40,
    }
    with db.begin() as conn:
        alert_store.write_alert(conn, "fresh", values)
    with db.begin() as conn:
        locked = dict(alert_store.lock_alert(conn, "fresh"))
    core = alert_row(db, "fresh")
    assert locked == core == values
    for name, value in locked.items():
        assert type(value) is type(core[name]), name
    assert locked["acknowledged"] is True
    assert isinstance(locked["opened_at"], float) and isinstance(locked["last_activity_id"], int)


def test_a_dbapi_error_is_wrapped_and_the_transaction_rolled_back(db: Database) -> None:
    missing_raw = activity(21)
    del missing_raw["raw"]  # NOT NULL
    with pytest.raises(sa.exc.IntegrityError) as caught, db.begin() as conn:
        assert store.insert_activity(conn, activity(20)) is True
        store.insert_activity(conn, missing_raw)
    dbapi = db.engine.dialect.loaded_dbapi
    assert isinstance(caught.value.orig, dbapi.IntegrityError)
    assert "INSERT INTO activities" in str(caught.value.statement)
    assert caught.value.connection_invalidated is False
    # Activity 20 went with the failed transaction, and the pool's connection is usable.
    assert count(db, activities) == 0
    with db.begin() as conn:
        assert store.insert_activity(conn, activity(20)) is True
    assert count(db, activities) == 1


def test_values_written_into_the_statement_are_sent(db: Database) -> None:
    # _lock_statement writes state="closed" and acknowledged=False into the INSERT.
    with db.begin() as conn:
        alert_store.lock_alert(conn, "written")
    with db.connect() as conn:
        row = conn.execute(
            sa.select(alerts.c.state, alerts.c.acknowledged).where(alerts.c.key == "written")
        ).one()
    assert (row.state, row.acknowledged) == ("closed", False)
    # And a constant of a statement of this test's own.
    renamed = Prepared(
        lambda _dialect: (
            sa.update(alerts)
            .where(alerts.c.key == sa.bindparam("alert_key"))
            .values(state="open", severity=sa.bindparam("severity"))
        )
    )
    with db.begin() as conn:
        renamed.execute(conn, {"alert_key": "written", "severity": "MINOR"})
    assert alert_row(db, "written")["state"] == "open"
    assert alert_row(db, "written")["severity"] == "MINOR"


def test_a_missing_parameter_in_the_where_clause_fails_loudly(db: Database) -> None:
    """write_alert without its key must not run ``UPDATE ... WHERE key = NULL``.

    Connection.execute refuses it (a value is required for bind parameter
    'alert_key'); a Prepared statement must not quietly update nothing instead.
    """
    with db.begin() as conn:
        alert_store.lock_alert(conn, "k")
    update = sa.update(alerts).where(alerts.c.key == sa.bindparam("alert_key"))
    with pytest.raises(sa.exc.StatementError), db.begin() as conn:
        conn.execute(update, {"state": "open"})
    with pytest.raises((KeyError, sa.exc.StatementError)), db.begin() as conn:
        alert_store._WRITE.execute(conn, {"state": "open"})
    assert alert_row(db, "k")["state"] == "closed"


def test_a_missing_value_of_an_insert_fails_before_the_database(db: Database) -> None:
    # lock_alert without its key: refused as Connection.execute refuses a required
    # bind parameter without a value, instead of sending NULL.
    with pytest.raises(KeyError, match="'key'"), db.begin() as conn:
        alert_store._LOCK.execute(conn, {})
    assert count(db, alerts) == 0


def test_statement_observers_see_every_prepared_statement(db: Database) -> None:
    seen: list[str] = []
    prepared.statement_observers.append(seen.append)
    try:
        with db.begin() as conn:
            store.insert_activity(conn, activity(30))
            alert_store.lock_alert(conn, "obs")
            alert_store.link_activity(conn, "obs", 30)
    finally:
        prepared.statement_observers.remove(seen.append)
    assert len(seen) == 3
    assert seen[0].startswith("INSERT INTO activities")
    assert seen[1].startswith("INSERT INTO alerts")
    assert seen[2].startswith("INSERT INTO alert_activities")
    with db.connect() as conn:
        assert conn.execute(sa.select(alert_activities.c.activity_id)).scalars().all() == [30]


def test_recorded_statements_include_what_ingest_prepares(state: AppState) -> None:
    payload = condition_activity(40)
    with recorded_statements(state.db.engine) as statements:
        result = ingest_activity(state, body(payload), payload)
    assert result.duplicate is False
    joined = "\n".join(statements)
    assert "INSERT INTO activities" in joined
    assert "INSERT INTO alerts" in joined
    assert "INSERT INTO alert_activities" in joined
    assert "UPDATE alerts SET" in joined
    with state.db.connect() as conn:
        alert = alert_store.get_alert(conn, payload["seriesUid"])
        assert alert is not None and alert.state == "open"


def test_a_lost_postgresql_connection_is_invalidated_and_replaced(
    database_url: str, db: Database
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: a server-side session to terminate")
    admin = sa.create_engine(normalize_url(PG_ADMIN_URL, Path(".")), isolation_level="AUTOCOMMIT")
    try:
        with pytest.raises(sa.exc.DBAPIError) as caught, db.begin() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with admin.connect() as admin_conn:
                assert admin_conn.execute(
                    sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}
                ).scalar()
            store.insert_activity(conn, activity(50))
    finally:
        admin.dispose()
    assert isinstance(caught.value, sa.exc.OperationalError)
    assert caught.value.connection_invalidated is True
    with db.begin() as conn:
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid
        assert store.insert_activity(conn, activity(50)) is True
    assert count(db, activities) == 1
