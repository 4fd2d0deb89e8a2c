"""What a sender of the receiver needs: the test tokens, the ingest path, the headers."""

from __future__ import annotations

from typing import Any

from tests.support.payloads import body

WEBHOOK_TOKEN = "whk_test_token_0123456789abcdef"
API_TOKEN = "api_test_token_0123456789abcdef"
INGEST_PATH = "/webhooks/ninjarmm/activity"
WEBHOOK_HEADERS = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
API_HEADERS = {"Authorization": f"Bearer {API_TOKEN}"}


def deliver(client: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """POST ``payload`` to the ingest path with the webhook token; asserts 200, returns the
    answer."""
    r = client.post(INGEST_PATH, content=body(payload), headers=WEBHOOK_HEADERS)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer
