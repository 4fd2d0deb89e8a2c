"""webhook.yaml against the running app, with schemathesis: stateless and stateful.

Every operation gets generated requests (valid and invalid) with the right token
for its tag; every answer is checked against webhook.yaml: no 5xx, a documented
status code, a documented content type, a body matching the response schema.
The stateful run follows the links in webhook.yaml (a stored delivery's ``id``
into the read API), so it reads back what it just ingested.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from app.spec import SPEC_PATH
from app.web.factory import create_app
from tests.support import API_TOKEN, WEBHOOK_TOKEN, LiveServer

schema = schemathesis.openapi.from_path(str(SPEC_PATH))

CONTRACT_SETTINGS = hypothesis.settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    # The server fixture is shared by the examples of one operation on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def credentials(case: Any) -> dict[str, str]:
    """The token an operation's security scheme asks for (none for the probes)."""
    security = case.operation.definition.raw.get("security")
    if security == []:
        return {}
    token = WEBHOOK_TOKEN if case.path.startswith("/webhooks/") else API_TOKEN
    return {"Authorization": f"Bearer {token}"}


def excluded_checks(case: Any) -> list[Any]:
    """Checks that do not apply to ``case``'s operation.

    Every schema-valid delivery must be accepted, so ingest keeps every check. The
    read API's ``cursor`` (opaque, only ours are valid) and ``since``/``until``
    (ISO 8601 or epoch seconds) have meaning beyond their schema, and answer a
    schema-valid but meaningless value with a 400 that names the parameter.
    """
    # The tokens are passed as plain headers (two schemes per operation: a header
    # and a query token or cookie), which ignored_auth cannot take away; the real
    # servers in tests/test_auth.py check authentication instead.
    if case.path.startswith("/webhooks/"):
        return [ignored_auth]
    return [ignored_auth, positive_data_acceptance]


@pytest.fixture
def contract_server(sqlite_template: Path, tmp_path: Path) -> Iterator[LiveServer]:
    """The app (responses validated by Connexion too) on uvicorn on 127.0.0.1.

    SQLite only: the contract is about HTTP, and the backends are exercised against
    real servers by test_hostile.py, test_auth.py and tests/reliability/.
    """
    database = tmp_path / "instance" / "ninjahook.sqlite3"
    database.parent.mkdir(parents=True)
    shutil.copy(sqlite_template, database)
    app = create_app(
        {
            "instance_path": str(database.parent),
            "database_url": f"sqlite:///{database}",
            "webhook_tokens": WEBHOOK_TOKEN,
            "api_tokens": API_TOKEN,
            "background_tasks": "0",
            "validate_responses": True,
        }
    )
    server = LiveServer(app).start()
    yield server
    server.stop()
    app.app.extensions["ninjahook"].db.dispose()


@schema.parametrize()
@CONTRACT_SETTINGS
def test_every_operation_answers_as_webhook_yaml_says(
    case: Any, contract_server: LiveServer
) -> None:
    case.call_and_validate(
        base_url=contract_server.url,
        headers=credentials(case),
        excluded_checks=excluded_checks(case),
    )


def test_stateful_ingest_then_read_back(contract_server: LiveServer) -> None:
    steps: list[tuple[str, int]] = []

    # The operations the links join: ingest, and reading back what it stored.
    linked = schema.include(
        operation_id=[
            "handlers.ingest.receive_activity",
            "handlers.activities.get_activity",
            "handlers.activities.get_activity_raw",
        ]
    )

    class IngestThenRead(linked.as_state_machine()):  # type: ignore[misc]
        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            steps.append((case.operation.label, response.status_code))

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": contract_server.url, "headers": credentials(case)}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(
                response,
                excluded_checks=excluded_checks(case),
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    hypothesis.stateful.run_state_machine_as_test(
        IngestThenRead,
        settings=hypothesis.settings(
            max_examples=15,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    # The links were followed: deliveries stored, then read back by their id.
    assert ("POST /webhooks/ninjarmm/activity", 200) in steps
    assert ("GET /activities/{id}", 200) in steps or ("GET /activities/{id}/raw", 200) in steps
