"""Strict parsing and compiled validation of delivery bodies.

Plugged into Connexion through ``validator_map``, so webhook.yaml still decides
which schema applies. Compared with Connexion's own JSON validator this one

* reads the body whatever its framing (chunked, no Content-Length),
* answers invalid UTF-8, NaN/Infinity, duplicate keys and absurd nesting with a
  400 that says so, instead of a 500 or a silent guess,
* validates with a compiled validator (fastjsonschema) whose errors name the field,
  with draft 4 integers: ``1.0`` and ``1e3`` are numbers, not integers,
* leaves ``x-extensible-enum`` values open: they are documentation, not checks,
* hands the exact bytes and the parsed payload to the handler, which parses nothing,
* records why an authenticated delivery was rejected, so it can be kept.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import sys
from collections.abc import AsyncGenerator
from functools import lru_cache
from typing import Any

import fastjsonschema
from connexion.exceptions import BadRequestProblem, UnsupportedMediaTypeProblem
from connexion.utils import is_null, is_nullable
from connexion.validators import AbstractRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator, ValidationError
from starlette.datastructures import MutableHeaders
from starlette.types import Receive, Scope

from app.ingest.rejected import Rejection, keep_rejected
from app.spec import to_json_schema
from app.web.request_state import request_state

log = logging.getLogger(__name__)


class InvalidBody(ValueError):
    """A body that cannot be accepted; ``field`` is None when it is not about one field."""

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


def _reject_constant(name: str) -> Any:
    raise InvalidBody(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidBody(f"duplicate key {key!r} in a JSON object", field=key)
            seen.add(key)
    return obj


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Parse ``raw`` as one JSON object, strictly.

    :raises InvalidBody: naming the cause (and the field, where there is one).
    """
    if not raw.strip():
        raise InvalidBody("the request body is empty; expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidBody(f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except InvalidBody:
        raise
    except json.JSONDecodeError as exc:
        raise InvalidBody(
            f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise InvalidBody("the JSON is nested too deeply") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            # Python's own message tells the sender to call sys.set_int_max_str_digits().
            raise InvalidBody(
                f"malformed JSON: an integer has more than {sys.get_int_max_str_digits()} digits"
            ) from None
        raise InvalidBody(f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidBody(f"the body must be a JSON object, not {type(value).__name__}")
    return value


# OpenAPI 3.0 schemas follow JSON Schema draft 4/5, where an integer is a JSON number
# without a fraction or exponent. Under draft 6 and later (fastjsonschema's default) 1.0
# is an integer, so ``"id": 9007199254740993.0`` passed as the float 9007199254740992.0:
# acknowledged, and stored as (or taken for a duplicate of) another activity.
_DRAFT_04 = "http://json-schema.org/draft-04/schema#"


@lru_cache(maxsize=16)
def _compiled(schema_json: str) -> Any:
    return fastjsonschema.compile({"$schema": _DRAFT_04, **to_json_schema(json.loads(schema_json))})


# Connexion builds a new body validator for every request but hands it the same schema
# dict each time, so the compiled validator is found by the schema's identity first:
# serializing the whole Activity schema to find it by content cost ~0.3 ms a request.
# Holding the schema in the entry keeps its id from being reused by another object.
_BY_IDENTITY: dict[int, tuple[dict[str, Any], Any]] = {}
_BY_IDENTITY_LIMIT = 64


def compiled_validator(schema: dict[str, Any]) -> Any:
    """A compiled validator for an OpenAPI schema (cached per distinct schema)."""
    entry = _BY_IDENTITY.get(id(schema))
    if entry is not None and entry[0] is schema:
        return entry[1]
    # Connexion attaches the spec's whole ``components`` to a body schema whose $refs it
    # has already resolved. With response validation on, it attaches them to response
    # schemas inside ``components`` too, which makes ``components`` self-referential.
    own = {key: value for key, value in schema.items() if key != "components"}
    validate = _compiled(json.dumps(own, sort_keys=True))
    if len(_BY_IDENTITY) < _BY_IDENTITY_LIMIT:
        _BY_IDENTITY[id(schema)] = (schema, validate)
    return validate


def validate_payload(validate: Any, payload: dict[str, Any]) -> None:
    """Run a compiled validator; :class:`InvalidBody` names the failing field."""
    try:
        validate(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        path = [str(p) for p in (exc.path or [])][1:]
        field = ".".join(path) if path else None
        message = exc.message
        if exc.name and message.startswith(exc.name):
            message = message[len(exc.name) :].strip()
        if field:
            raise InvalidBody(f"{field}: {message}", field=field) from None
        if exc.rule == "required":
            present = exc.value if isinstance(exc.value, dict) else {}
            missing = [k for k in exc.rule_definition or [] if k not in present]
            name = missing[0] if missing else "body"
            raise InvalidBody(f"{name}: is required", field=name) from None
        raise InvalidBody(f"body: {message}") from None
    except RecursionError:
        raise InvalidBody("the JSON is nested too deeply") from None


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
