"""webhook.yaml documents every field of NinjaOne's Device, Organization and Location."""

from __future__ import annotations

import pytest

from app.spec import load_spec
from tests.support import load_reference


@pytest.mark.parametrize(
    ("reference", "ours"),
    [
        ("Device", "ExpandedDevice"),
        ("Organization", "ExpandedOrganization"),
        ("Location", "ExpandedLocation"),
    ],
)
def test_expanded_and_cached_entities_list_every_reference_field(reference: str, ours: str) -> None:
    reference_fields = set(
        load_reference("ninjaone-api-v2-subset.json")["components"]["schemas"][reference][
            "properties"
        ]
    )
    schemas = load_spec()["components"]["schemas"]
    expanded = schemas[ours]
    assert reference_fields <= set(expanded["properties"]), reference_fields - set(
        expanded["properties"]
    )
    # Still open: NinjaOne adds fields without notice.
    assert expanded["additionalProperties"] is True
    cached = schemas[ours.replace("Expanded", "Cached")]
    assert cached["properties"]["raw"]["allOf"] == [{"$ref": f"#/components/schemas/{ours}"}]
