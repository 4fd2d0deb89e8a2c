"""The wheel serves: built from this tree, installed into a fresh virtualenv, run from an
empty directory, far from the checkout.

The wheel is installed with ``--no-deps``; its dependencies come from this test run's
virtualenv through a .pth file, so the test needs no index for them. (Building the wheel
does: pip sets up setuptools for the build in an isolated environment, as a user's build
would.) The checkout's editable install is not visible there: a .pth file's directory is
added to ``sys.path`` but its own .pth files are not run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support import INGEST_PATH, ROOT, body, condition_activity, free_port

# What the build needs from the tree is copied, not built in place: setuptools would
# otherwise reuse (and package) whatever an earlier build left in build/lib.
_NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "instance",
    "test-artifacts",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed; returns its python."""
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, tmp / "src", ignore=_NOT_COPIED)
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", "."],
        cwd=tmp / "src",
        timeout=600,
    )
    (wheel,) = (tmp / "dist").glob("ninjahook-*.whl")
    _run([sys.executable, "-m", "venv", "--without-pip", tmp / "venv"], cwd=tmp)
    python = tmp / "venv" / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel],
        cwd=tmp,
        timeout=300,
    )
    site = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp
    ).strip()
    Path(site, "ninjahook-test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def test_the_wheel_ships_the_spec_and_imports_from_the_virtualenv(
    installed: Path, tmp_path: Path
) -> None:
    venv = installed.parent.parent
    out = _run(
        [installed, "-c", "import app, app.spec; print(app.__file__); print(app.spec.SPEC_PATH)"],
        cwd=tmp_path,
    )
    module, spec = (Path(line) for line in out.splitlines())
    assert module.is_relative_to(venv), f"app was imported from {module}, not from {venv}"
    assert spec == module.parent / "spec" / "webhook.yaml"
    assert spec.read_bytes() == (ROOT / "webhook.yaml").read_bytes()
    for typed in ("app", "handlers"):
        assert (module.parent.parent / typed / "py.typed").is_file()


def test_migrate_serve_and_store_a_delivery_from_an_empty_directory(
    installed: Path, tmp_path: Path
) -> None:
    bin_dir = installed.parent
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _run([bin_dir / "ninjahook", "migrate"], cwd=run_dir)
    assert (run_dir / "instance" / "ninjahook.sqlite3").is_file()

    port = free_port()
    with _server([bin_dir / "ninjahook", "serve", "--port", str(port)], run_dir, port) as url:
        _deliver_and_read_back(url, run_dir / "instance", 880001)
        # The dashboard's templates and static files are in the wheel too.
        assert httpx.get(url + "/").status_code == 200
        css = httpx.get(url + "/ui/static/dashboard.css")
        assert css.status_code == 200 and css.text.strip()

    # The production server, as README's "Install from a wheel" runs it.
    port = free_port()
    env = {"NINJAHOOK_PORT": str(port), "NINJAHOOK_WORKERS": "1"}
    gunicorn = [installed, "-m", "gunicorn", "-c", "python:app.gunicorn_conf"]
    with _server(gunicorn, run_dir, port, env) as url:
        _deliver_and_read_back(url, run_dir / "instance", 880002)
        assert (run_dir / "instance" / "gunicorn.ctl").is_socket()


def _deliver_and_read_back(url: str, instance: Path, activity_id: int) -> None:
    webhook_token = (instance / "webhook-token").read_text().strip()
    api_token = (instance / "api-token").read_text().strip()
    r = httpx.post(
        url + INGEST_PATH,
        content=body(condition_activity(activity_id)),
        headers={"Authorization": f"Bearer {webhook_token}", "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"id": activity_id, "duplicate": False}
    r = httpx.get(
        f"{url}/activities/{activity_id}", headers={"Authorization": f"Bearer {api_token}"}
    )
    assert r.status_code == 200 and r.json()["deviceId"] == 42


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ninjahook settings or a PYTHONPATH to the tree."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NINJAHOOK_", "NINJAONE_", "GUNICORN_", "PYTHON"))
    }
    return {**env, **(extra or {})}


def _run(args: list[object], cwd: Path, timeout: float = 120) -> str:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@contextmanager
def _server(
    args: list[object], cwd: Path, port: int, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run ``args`` until the block ends (SIGTERM); yields its URL once /readyz answers 200."""
    url = f"http://127.0.0.1:{port}"
    log = cwd / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(a) for a in args], cwd=cwd, env=_clean_env(env), stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"{args} exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{args} did not start:\n{log.read_text()}"
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
