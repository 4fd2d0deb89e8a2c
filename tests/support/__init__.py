"""Test helpers, by concern; everything public is importable from ``tests.support``.

- :mod:`tests.support.paths`: the repository root and the vendored reference data.
- :mod:`tests.support.receiver`: the test tokens, the ingest path and headers, ``deliver``.
- :mod:`tests.support.payloads`: NinjaOne-shaped activities, their wire form, cached entities.
- :mod:`tests.support.databases`: the backends under test, throwaway and migrated databases,
  recorded SQL.
- :mod:`tests.support.servers`: uvicorn in a thread, gunicorn as a subprocess (migrated
  first by ``start_gunicorn``), a recording webhook destination.
- :mod:`tests.support.cli`: the ``ninjahook`` command line in-process.
- :mod:`tests.support.notifications`: fast delivery settings, a one-route file, a worker run dry.

Fixtures live in tests/conftest.py, which imports its helpers from here; tests never import
from a conftest.
"""

from tests.support.cli import ninjaone_env, run_cli
from tests.support.databases import (
    BACKENDS,
    PG_ADMIN_URL,
    create_pg_database,
    drop_pg_database,
    empty_all_tables,
    migrate_database,
    migrated_empty_database,
    recorded_statements,
    scratch_database,
)
from tests.support.notifications import (
    FAST_DELIVERY,
    condition_route_yaml,
    one_route_file,
    settle_deliveries,
)
from tests.support.paths import REFERENCE_DIR, ROOT, load_reference
from tests.support.payloads import body, condition_activity, minimal_activity, seed_entities
from tests.support.receiver import (
    API_HEADERS,
    API_TOKEN,
    INGEST_PATH,
    WEBHOOK_HEADERS,
    WEBHOOK_TOKEN,
    deliver,
)
from tests.support.servers import (
    DestinationServer,
    GunicornServer,
    LiveServer,
    free_port,
    live_server,
    server_env,
    start_gunicorn,
)

__all__ = [
    "API_HEADERS",
    "API_TOKEN",
    "BACKENDS",
    "FAST_DELIVERY",
    "INGEST_PATH",
    "PG_ADMIN_URL",
    "REFERENCE_DIR",
    "ROOT",
    "WEBHOOK_HEADERS",
    "WEBHOOK_TOKEN",
    "DestinationServer",
    "GunicornServer",
    "LiveServer",
    "body",
    "condition_activity",
    "condition_route_yaml",
    "create_pg_database",
    "deliver",
    "drop_pg_database",
    "empty_all_tables",
    "free_port",
    "live_server",
    "load_reference",
    "migrate_database",
    "migrated_empty_database",
    "minimal_activity",
    "ninjaone_env",
    "one_route_file",
    "recorded_statements",
    "run_cli",
    "scratch_database",
    "seed_entities",
    "server_env",
    "settle_deliveries",
    "start_gunicorn",
]
