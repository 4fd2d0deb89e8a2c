"""``make regenerate``: derive the spec-driven layer from webhook.yaml.

It writes :mod:`app.spec.generated` (payload TypedDicts, the sets of known enum values
and where in a payload they apply) and adds a stub answering 501 for every
operationId that has no handler yet. Implemented handlers are never touched.
``--check`` writes nothing and fails when anything is stale or unresolved.
"""

from __future__ import annotations

import ast
import importlib
import keyword
import sys
from pathlib import Path
from typing import Any

import click

from app.spec import SPEC_PATH, load_spec, resolve_refs

ROOT = SPEC_PATH.parent
GENERATED_PATH = ROOT / "app" / "spec" / "generated.py"
HEADER = '"""Generated from webhook.yaml by `make regenerate`; do not edit."""\n'

TYPED_SCHEMAS = (
    "Activity",
    "ExpandedDevice",
    "ExpandedOrganization",
    "ExpandedLocation",
    "IngestResult",
)

_PY_TYPES = {
    "integer": "int",
    "number": "float",
    "string": "str",
    "boolean": "bool",
    "object": "dict[str, Any]",
    "array": "list[Any]",
}


def _py_type(prop: dict[str, Any], spec: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        target = spec["components"]["schemas"][name]
        base = name if name in TYPED_SCHEMAS else _PY_TYPES.get(target.get("type", ""), "Any")
        nullable = target.get("nullable", False)
    else:
        base = _PY_TYPES.get(prop.get("type", ""), "Any")
        if prop.get("type") == "array" and prop.get("items", {}).get("type") in _PY_TYPES:
            base = f"list[{_PY_TYPES[prop['items']['type']]}]"
        nullable = prop.get("nullable", False)
    return f"{base} | None" if nullable else base


def _extensible_fields(
    node: dict[str, Any], spec: dict[str, Any], path: tuple[str, ...]
) -> list[tuple[tuple[str, ...], list[str]]]:
    """Every property below ``node`` that carries x-extensible-enum, with its payload path."""
    found: list[tuple[tuple[str, ...], list[str]]] = []
    node = resolve_refs(node, spec)
    if "x-extensible-enum" in node:
        found.append((path, list(node["x-extensible-enum"])))
    for name, sub in node.get("properties", {}).items():
        found.extend(_extensible_fields(sub, spec, (*path, name)))
    return found


def render_generated(spec: dict[str, Any]) -> str:
    """The source of app/spec/generated.py for ``spec``."""
    schemas = spec["components"]["schemas"]
    lines = [
        HEADER,
        "from __future__ import annotations",
        "",
        "from typing import Any, NotRequired, TypedDict",
        "",
    ]
    for name in TYPED_SCHEMAS:
        sch = schemas[name]
        required = set(sch.get("required", []))
        lines += ["", f"class {name}(TypedDict):"]
        doc = " ".join((sch.get("description") or name).split()).split(". ")[0].rstrip(".") + "."
        lines.append(f'    """{doc}"""')
        lines.append("")
        for prop, sub in sch.get("properties", {}).items():
            if not prop.isidentifier() or keyword.iskeyword(prop):
                continue
            typ = _py_type(sub, spec)
            lines.append(f"    {prop}: {typ if prop in required else f'NotRequired[{typ}]'}")
        lines.append("")
    fields = _extensible_fields(schemas["Activity"], spec, ())
    lines += [
        "",
        "# Known values of NinjaOne's open enums, by their path in an Activity payload.",
        "# A value outside these sets is accepted and counted as spec drift.",
        "KNOWN_VALUES: dict[tuple[str, ...], frozenset[str]] = {",
    ]
    for path, values in fields:
        lines.append(f"    {path!r}: frozenset(")
        lines.append("        {")
        lines.extend(f"            {v!r}," for v in values)
        lines.append("        }")
        lines.append("    ),")
    lines += [
        "}",
        "",
        "# Every operationId in webhook.yaml, in document order.",
        "OPERATION_IDS: tuple[str, ...] = (",
    ]
    lines.extend(f"    {op!r}," for op in _operation_ids(spec))
    lines += [")", ""]
    return "\n".join(lines)


def _operation_ids(spec: dict[str, Any]) -> list[str]:
    from app.spec import operation_ids

    return operation_ids(spec)


STUB = '''

def {func}(*args: Any, **kwargs: Any) -> tuple[dict[str, Any], int]:
    """Not implemented yet: generated from webhook.yaml ({op_id})."""
    detail = "{op_id} is described in webhook.yaml but has no handler yet."
    return {{"title": "Not Implemented", "status": 501, "detail": detail}}, 501
'''


def _module_functions(path: Path) -> set[str]:
    if not path.exists():
        return set()
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)} | {
        t.id
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }


def missing_handlers(spec: dict[str, Any]) -> list[tuple[str, Path, str]]:
    """(operationId, module file, function) for each operationId with no function defined."""
    missing = []
    for op_id in _operation_ids(spec):
        module, _, func = op_id.rpartition(".")
        path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
        if func not in _module_functions(path):
            missing.append((op_id, path, func))
    return missing


def write_stubs(missing: list[tuple[str, Path, str]]) -> None:
    """Append a 501 stub for each missing handler, creating modules as needed."""
    for op_id, path, func in missing:
        if not path.exists():
            path.write_text(
                f'"""Handlers for {path.stem}: generated stubs until implemented."""\n\n'
                "from __future__ import annotations\n\nfrom typing import Any\n"
            )
        text = path.read_text()
        if "from typing import Any" not in text:
            text = text.replace(
                "from __future__ import annotations\n",
                "from __future__ import annotations\n\nfrom typing import Any\n",
                1,
            )
        path.write_text(text.rstrip("\n") + "\n" + STUB.format(func=func, op_id=op_id))


def validate(spec_path: Path) -> list[str]:
    """Problems with the spec itself and with resolving its operationIds."""
    from openapi_spec_validator import validate as validate_spec
    from openapi_spec_validator.readers import read_from_filename

    problems: list[str] = []
    try:
        spec_dict, _ = read_from_filename(str(spec_path))
        validate_spec(spec_dict)
    except Exception as exc:
        problems.append(f"webhook.yaml is not valid OpenAPI: {exc}")
        return problems
    ids = _operation_ids(load_spec(spec_path))
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        problems.append(f"duplicate operationIds: {', '.join(sorted(dupes))}")
    sys.path.insert(0, str(ROOT))
    for op_id in ids:
        module, _, func = op_id.rpartition(".")
        try:
            mod = importlib.import_module(module)
            if not callable(getattr(mod, func, None)):
                problems.append(f"{op_id}: {module} has no function {func}")
        except Exception as exc:
            problems.append(f"{op_id}: cannot import {module}: {exc}")
    return problems


@click.command()
@click.option(
    "--check", is_flag=True, help="Write nothing; fail when the generated layer is stale."
)
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(exists=True, path_type=Path),
    default=SPEC_PATH,
    show_default=True,
    help="The OpenAPI document.",
)
def main(check: bool, spec_path: Path) -> None:
    """Regenerate app/spec/generated.py and handler stubs from webhook.yaml, then revalidate."""
    spec = load_spec(spec_path)
    source = render_generated(spec)
    missing = missing_handlers(spec)
    current = GENERATED_PATH.read_text() if GENERATED_PATH.exists() else ""
    if check:
        stale = []
        if current != source:
            stale.append("app/spec/generated.py differs from webhook.yaml")
        stale += [f"no handler for {op}" for op, _, _ in missing]
        stale += validate(spec_path)
        if stale:
            for line in stale:
                click.echo(f"stale: {line}", err=True)
            raise SystemExit("the generated layer is stale: run `make regenerate`")
        click.echo("generated layer is up to date; webhook.yaml is valid")
        return
    if current != source:
        GENERATED_PATH.write_text(source)
        click.echo(f"wrote {GENERATED_PATH.relative_to(ROOT)}")
    if missing:
        write_stubs(missing)
        for op, path, _ in missing:
            click.echo(f"stub (501) for {op} in {path.relative_to(ROOT)}")
    problems = validate(spec_path)
    for line in problems:
        click.echo(f"error: {line}", err=True)
    if problems:
        raise SystemExit(1)
    click.echo("webhook.yaml is valid and every operationId resolves")


if __name__ == "__main__":
    main()
