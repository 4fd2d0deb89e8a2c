"""Where things are: the repository and the reference data vendored in tests/reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The checkout's top-level folder (webhook.yaml, gunicorn.conf.py, app/, tests/).
ROOT = Path(__file__).resolve().parents[2]
# NinjaOne's published API, as much of it as the tests compare against (see its README.md).
REFERENCE_DIR = ROOT / "tests" / "reference"


def load_reference(name: str) -> Any:
    """The parsed JSON file ``name`` from tests/reference."""
    return json.loads((REFERENCE_DIR / name).read_text())
