"""ninjahook with no ingest hooks: a measurement aid for `make bench`, never served.

It isolates what the receiver itself costs (authentication, validation, the group commit,
the durable idempotent INSERT) from what the extensions' hooks add to every new
activity in the same transaction (entity cache, alerts, outbox).
"""

from __future__ import annotations

from app.web.factory import create_app

app = create_app()
app.app.extensions["ninjahook"].pipeline.stages.clear()
