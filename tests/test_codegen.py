"""`make regenerate`: the generated layer follows webhook.yaml, stubs never overwrite handlers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.spec import SPEC_PATH, codegen, load_spec, operation_ids
from app.spec.generated import KNOWN_VALUES, OPERATION_IDS
from tests.support import load_reference

ROOT = SPEC_PATH.parent


def test_generated_module_is_up_to_date() -> None:
    assert (ROOT / "app" / "spec" / "generated.py").read_text() == codegen.render_generated(
        load_spec()
    )


def test_check_passes_on_the_committed_tree() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.spec.codegen", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert codegen.missing_handlers(load_spec()) == []


def test_known_values_come_from_the_spec() -> None:
    enums = load_reference("ninjaone-enums.json")
    assert KNOWN_VALUES[("activityType",)] == frozenset(enums["activityType"])
    assert KNOWN_VALUES[("statusCode",)] == frozenset(enums["statusCode"])
    assert len(KNOWN_VALUES[("statusCode",)]) == 660
    assert KNOWN_VALUES[("device", "nodeClass")] == frozenset(enums["nodeClass"])
    assert tuple(operation_ids()) == OPERATION_IDS


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the spec and handlers/ that codegen may write into."""
    shutil.copy(SPEC_PATH, tmp_path / "webhook.yaml")
    shutil.copytree(ROOT / "handlers", tmp_path / "handlers")
    (tmp_path / "app" / "spec").mkdir(parents=True)
    monkeypatch.setattr(codegen, "ROOT", tmp_path)
    return tmp_path


def test_stub_for_a_new_operation_and_implemented_handlers_untouched(sandbox: Path) -> None:
    spec_path = sandbox / "webhook.yaml"
    text = spec_path.read_text().replace(
        "  /healthz:\n",
        "  /version:\n    get:\n      operationId: handlers.extra.get_version\n"
        "      security: []\n      responses:\n        '200':\n          description: ok\n"
        "  /healthz:\n",
    )
    spec_path.write_text(text)
    spec = load_spec.__wrapped__(spec_path)
    before = (sandbox / "handlers" / "ingest.py").read_text()
    missing = codegen.missing_handlers(spec)
    assert [m[0] for m in missing] == ["handlers.extra.get_version"]
    codegen.write_stubs(missing)
    stub = (sandbox / "handlers" / "extra.py").read_text()
    assert "def get_version(" in stub and "501" in stub
    assert codegen.missing_handlers(spec) == []
    assert (sandbox / "handlers" / "ingest.py").read_text() == before
    namespace: dict[str, object] = {}
    exec(compile(stub, "extra.py", "exec"), namespace)
    body, status = namespace["get_version"]()  # type: ignore[operator]
    assert status == 501 and "handlers.extra.get_version" in body["detail"]


def test_check_fails_when_generated_module_is_stale(sandbox: Path) -> None:
    (sandbox / "app" / "spec" / "generated.py").write_text("# stale\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, app.spec.codegen as c, pathlib; c.ROOT = pathlib.Path(sys.argv[1]); "
            "c.GENERATED_PATH = c.ROOT / 'app' / 'spec' / 'generated.py'; "
            "c.main(['--check', '--spec', str(c.ROOT / 'webhook.yaml')])",
            str(sandbox),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "stale" in result.stderr
