"""Loading webhook.yaml, the single source of truth, and deriving schemas from it."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml

# From a checkout (editable install), the top-level webhook.yaml, read in place; installed
# from a wheel, the copy that setup.py's build step puts beside this file.
_CHECKOUT = Path(__file__).resolve().parents[2]
SPEC_PATH = (
    _CHECKOUT / "webhook.yaml"
    if (_CHECKOUT / "webhook.yaml").is_file() and (_CHECKOUT / "pyproject.toml").is_file()
    else Path(__file__).resolve().parent / "webhook.yaml"
)


@cache
def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    """The parsed OpenAPI document (cached; treat it as read-only)."""
    with path.open("rb") as fh:
        spec: dict[str, Any] = yaml.safe_load(fh)
    return spec


def resolve_refs(node: Any, spec: dict[str, Any]) -> Any:
    """A copy of ``node`` with every local ``$ref`` inlined (the spec has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return resolve_refs(target, spec)
        return {k: resolve_refs(v, spec) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_refs(v, spec) for v in node]
    return node


def to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Translate an OpenAPI 3.0 schema object into plain JSON Schema.

    ``nullable: true`` becomes a ``null`` alternative; ``x-`` extensions and
    ``format`` (documentation here; ranges are explicit) are dropped.
    """

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key.startswith("x-") or key in {"nullable", "format", "description", "example"}:
                continue
            if key == "properties":
                out[key] = {name: walk(sub) for name, sub in value.items()}
            elif isinstance(value, dict | list):
                out[key] = walk(value)
            else:
                out[key] = value
        if node.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
        return out

    return dict(walk(copy.deepcopy(schema)))


def schema(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """Component schema ``name`` with refs resolved, still in OpenAPI form."""
    spec = spec or load_spec()
    resolved: dict[str, Any] = resolve_refs(spec["components"]["schemas"][name], spec)
    return resolved


def operation_ids(spec: dict[str, Any] | None = None) -> list[str]:
    """Every operationId in document order."""
    spec = spec or load_spec()
    ids: list[str] = []
    for item in spec["paths"].values():
        for method, op in item.items():
            if method in {"get", "put", "post", "delete", "patch", "head", "options"}:
                ids.append(op["operationId"])
    return ids
