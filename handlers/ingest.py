"""Handlers for deliveries from NinjaOne."""

from __future__ import annotations

import logging
from typing import Any

from app.ingest.group_commit import committer_for
from app.logs import annotate_request
from app.web.context import JSON, current_request

log = logging.getLogger(__name__)


async def receive_activity() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Store the activity the body validator parsed; 200 whether new or a redelivery.

    The answer waits for the commit of the transaction that holds the activity
    (shared with the deliveries that arrived beside it: :mod:`app.ingest.group_commit`).
    """
    req = current_request()
    assert req.raw_body is not None and req.payload is not None
    # On the access log line (and every JSON line of this request) from here on.
    annotate_request(activity_id=req.payload.get("id"))
    result = await committer_for(req.app).submit(req.raw_body, req.payload, source="webhook")
    req.duplicate = result.duplicate
    log.debug(
        "%s activity %s",
        "redelivered" if result.duplicate else "stored",
        result.id,
        extra={"activity_id": result.id, "duplicate": result.duplicate},
    )
    return {"id": result.id, "duplicate": result.duplicate}, 200, JSON
