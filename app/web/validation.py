"""Strict parsing and compiled validation of delivery bodies.

Plugged into Connexion through ``validator_map``, so webhook.yaml still decides
which schema applies. Compared with Connexion's own JSON validator this one

* reads the body whatever its framing (chunked, no Content-Length),
* answers invalid UTF-8, NaN/Infinity, numbers that overflow a double (``1e400``),
  duplicate keys and absurd nesting with a 400 that says so, instead of a 500 or a
  silent guess,
* validates with a compiled validator (fastjsonschema) whose errors name the field,
  with draft 4 integers: ``1.0`` and ``1e3`` are numbers, not integers,
* leaves ``x-extensible-enum`` values open: they are documentation, not checks,
* hands the exact bytes and the parsed payload to the handler, which parses nothing,
* records why an authenticated delivery was rejected, so it can be kept.

The parsing and schema rules themselves live in :mod:`app.ingest.validation`, which
backfill uses too; this module plugs them into Connexion.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncGenerator
from typing import Any

from connexion.exceptions import BadRequestProblem, UnsupportedMediaTypeProblem
from connexion.middleware.abstract import ROUTING_CONTEXT
from connexion.utils import is_null, is_nullable
from connexion.validators import AbstractRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator, ValidationError
from starlette.datastructures import MutableHeaders
from starlette.types import Receive, Scope

from app.ingest.rejected import Rejection, keep_rejected
from app.ingest.validation import (
    InvalidBody,
    compiled_validator,
    parse_json_object,
    validate_payload,
)
from app.web.request_state import request_state

log = logging.getLogger(__name__)

__all__ = [
    "DeliveryBodyValidator",
    "InvalidBody",
    "NamedParameterValidator",
    "compiled_validator",
    "parse_json_object",
    "validate_payload",
]


class DeliveryBodyValidator(AbstractRequestBodyValidator):
    """Connexion request-body validator for ``application/json`` deliveries."""

    def __init__(
        self,
        *,
        schema: dict[str, Any],
        required: bool = False,
        nullable: bool = False,
        encoding: str,
        strict_validation: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            schema=schema,
            required=required,
            nullable=nullable,
            encoding=encoding,
            strict_validation=strict_validation,
        )
        self._validate_fn = compiled_validator(schema)

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        # Connexion treats a missing Content-Type as the operation's first media type;
        # a delivery must say what it is, like one with the wrong type (415).
        if not any(name == b"content-type" for name, _ in scope["headers"]):
            raise UnsupportedMediaTypeProblem(
                detail="the Content-Type header is missing; expected application/json"
            )
        state = request_state(scope)
        chunks: list[bytes] = []
        async for chunk in _body_chunks(receive):
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            payload = parse_json_object(raw)
            validate_payload(self._validate_fn, payload)
        except InvalidBody as exc:
            if not _is_delivery(scope):
                # An operator's request (POST /silences) is no delivery from NinjaOne.
                raise BadRequestProblem(detail=exc.detail) from None
            content_type = MutableHeaders(scope=scope).get("content-type")
            state.rejection = Rejection(
                reason=exc.detail,
                field=exc.field,
                body=raw,
                body_bytes=len(raw),
                truncated=False,
                content_type=content_type,
            )
            # Kept before the 400 leaves: a database error here propagates and is answered
            # 503 (not kept means not lost only if the sender retries).
            rejected_id = await asyncio.to_thread(keep_rejected, state.app, state.rejection)
            log.warning("rejected delivery %d: %s", rejected_id, exc.detail)
            raise BadRequestProblem(detail=exc.detail) from None
        state.raw_body = raw
        state.payload = payload
        # Replay the body with an exact Content-Length, so that the WSGI side sees the
        # same bytes whatever framing the sender used.
        new_scope = dict(scope)
        new_scope["headers"] = [
            (k, v)
            for k, v in scope["headers"]
            if k not in (b"content-length", b"transfer-encoding")
        ] + [(b"content-length", str(len(raw)).encode())]
        return _replay(raw, receive), new_scope


# The operation whose invalid bodies are kept as rejected deliveries.
DELIVERY_OPERATION = "handlers.ingest.receive_activity"


def _is_delivery(scope: Scope) -> bool:
    routing = scope.get("extensions", {}).get(ROUTING_CONTEXT) or {}
    return bool(routing.get("operation_id") == DELIVERY_OPERATION)


async def _body_chunks(receive: Receive) -> AsyncGenerator[bytes, None]:
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequestProblem(detail="the client disconnected before the body was complete")
        more_body = message.get("more_body", False)
        yield message.get("body", b"")


def _replay(raw: bytes, receive: Receive) -> Receive:
    sent = False

    async def receive_() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        message: dict[str, Any] = dict(await receive())
        return message

    return receive_


# jsonschema checks no OpenAPI integer formats: without these, an int32 parameter
# accepts 2147483648, which webhook.yaml rules out.
def _is_int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


def _is_int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


PARAMETER_FORMATS = copy.deepcopy(Draft4Validator.FORMAT_CHECKER)
PARAMETER_FORMATS.checks("int32")(_is_int32)
PARAMETER_FORMATS.checks("int64")(_is_int64)


class NamedParameterValidator(ParameterValidator):
    """Connexion's parameter validator, with errors that start with the parameter's name.

    Connexion's own message ("0 is less than the minimum of 1", plus a schema dump)
    does not say which parameter was wrong.
    """

    @staticmethod
    def validate_parameter(
        parameter_type: str, value: Any, param: dict[str, Any], param_name: str | None = None
    ) -> str | None:
        if is_nullable(param) and is_null(value):
            return None
        if value is not None:
            schema = param.get("schema", param)
            try:
                Draft4Validator(schema, format_checker=PARAMETER_FORMATS).validate(value)
            except ValidationError as exc:
                return f"{param['name']} ({parameter_type} parameter): {exc.message}"
            return None
        if param.get("required"):
            return f"{param['name']} ({parameter_type} parameter): is required"
        return None
