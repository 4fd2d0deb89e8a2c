"""The rules a delivery body must meet, free of any web framework.

Both the web's body validator (:mod:`app.web.validation`) and backfill
(:mod:`app.ninjaone.sync`) check an activity with these, so an activity is accepted or
rejected for the same reasons whichever way it arrived:

* :func:`parse_json_object`: strict JSON: UTF-8, no NaN/Infinity, no number that
  overflows a 64-bit float (``1e400``, named by its field), no duplicate keys, bounded
  nesting, one object;
* :func:`validate_payload` with :func:`compiled_validator` (or :func:`validate_activity`):
  the webhook.yaml schema, compiled (fastjsonschema), draft 4 integers, errors that
  name the field.
"""

from __future__ import annotations

import json
import math
import re
import sys
from functools import lru_cache
from typing import Any

import fastjsonschema

from app.spec import schema as spec_schema
from app.spec import to_json_schema


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


# An integer literal this long may be beyond a double's range (about 1.8e308): such a
# body is searched for the integer that is (a string with many digits is not).
_LONG_DIGITS = re.compile(rb"[0-9]{309}")


def _overflows(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            return True
    return False


def first_non_finite(value: Any) -> str | None:
    """The path (keys and indices joined by ``.``) of the first number in ``value`` that is
    not finite as a 64-bit float, or None. Iterative: nesting depth costs no stack."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = [(str(i), v) for i, v in enumerate(node)]
        else:
            if _overflows(node):
                return path or "body"
            continue
        for key, child in reversed(items):
            stack.append((f"{path}.{key}" if path else key, child))
    return None


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
    overflowed = False

    def parse_float(literal: str) -> float:
        nonlocal overflowed
        number = float(literal)
        if math.isinf(number):
            overflowed = True
        return number

    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=parse_float,
            object_pairs_hook=_no_duplicates,
        )
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
    if overflowed or _LONG_DIGITS.search(raw):
        field = first_non_finite(value)
        if field is not None:
            raise InvalidBody(
                f"{field}: is not a finite number (beyond the range of a 64-bit float)",
                field=field,
            )
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


@lru_cache(maxsize=1)
def activity_validator() -> Any:
    """The compiled validator of webhook.yaml's ``Activity`` schema (the request body of
    the ingest operation)."""
    return _compiled(json.dumps(spec_schema("Activity"), sort_keys=True))


def validate_activity(raw: bytes) -> dict[str, Any]:
    """Parse and validate one activity exactly as a webhook delivery's body is.

    :raises InvalidBody: naming the cause and the field.
    """
    payload = parse_json_object(raw)
    validate_payload(activity_validator(), payload)
    return payload
