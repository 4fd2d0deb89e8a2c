"""No token reaches a log line."""

from __future__ import annotations

import logging

import pytest

from app.logs import RedactTokens, redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('"POST /webhooks/ninjarmm/activity?token=s3cr3t-value HTTP/1.1" 200', "s3cr3t-value"),
        ("GET /x?a=1&token=abc123&b=2", "abc123"),
        ("Authorization: Bearer eyJhbGciOi.xyz", "eyJhbGciOi.xyz"),
        ("GET /x?access_token=zzz", "zzz"),
        # The fast path looks for "=" or "bearer" case-insensitively before any
        # substitution: these must still reach the substitutions.
        ("authorization: BEARER MixedCase.Token", "MixedCase.Token"),
        ("GET /x?%74oken=encoded-name", "encoded-name"),
        ("a&api_key=k3y", "k3y"),
    ],
)
def test_redact(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "[REDACTED]" in redact(text)


def test_filter_rewrites_access_log_arguments() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "POST", "/hook?token=topsecret", "1.1", 200),
        None,
    )
    RedactTokens().filter(record)
    assert "topsecret" not in record.getMessage()
    assert "/hook?token=[REDACTED]" in record.getMessage()


@pytest.mark.parametrize(
    "text", ["127.0.0.1:55294", "POST", "/webhooks/ninjarmm/activity", "1.1", "Bearish"]
)
def test_redact_leaves_text_without_a_possible_secret_alone(text: str) -> None:
    assert redact(text) is text
