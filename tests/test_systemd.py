"""deploy/ninjahook.service and deploy/ninjahook.env.example.

The unit's settings are checked by parsing it (everywhere), by `systemd-analyze verify`
(where systemd-analyze is installed), and by running its own ExecStartPre and ExecStart
lines, with this checkout's venv in place of /opt/ninjahook, the way systemd would.
"""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.config import SETTINGS, load_config
from tests.support import (
    API_HEADERS,
    API_TOKEN,
    INGEST_PATH,
    ROOT,
    WEBHOOK_TOKEN,
    condition_activity,
    free_port,
)

UNIT = ROOT / "deploy" / "ninjahook.service"
ENV_EXAMPLE = ROOT / "deploy" / "ninjahook.env.example"
VENV = "/opt/ninjahook"
STATE = "/var/lib/ninjahook"

# Read by app/gunicorn_conf.py, not by app.config.
GUNICORN_VARIABLES = {"NINJAHOOK_BIND", "NINJAHOOK_WORKERS", "NINJAHOOK_GRACEFUL_TIMEOUT"}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → keys → values, in order (a key may repeat, as Environment= does)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=value: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def parse_env_file(text: str) -> dict[str, str]:
    """The VARIABLE=value lines of an EnvironmentFile (comments and blanks skipped)."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f"not VARIABLE=value: {line}"
        env[key] = value
    return env


def seconds(value: str) -> float:
    """A systemd time span such as 45s, 45 or 1min 30s."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(settings: dict[str, list[str]], key: str) -> str:
    values = settings.get(key, [])
    assert len(values) == 1, f"{key}= is set {len(values)} times"
    return values[0]


def environment(settings: dict[str, list[str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in settings.get("Environment", []):
        for assignment in shlex.split(value):
            key, _, val = assignment.partition("=")
            env[key] = val
    return env


def test_unit_runs_gunicorn_from_the_venv_after_migrating() -> None:
    s = service()
    assert one(s, "Type") in ("exec", "simple")
    assert one(s, "ExecStartPre") == f"{VENV}/bin/ninjahook migrate"
    assert one(s, "ExecStart") == f"{VENV}/bin/gunicorn -c python:app.gunicorn_conf"
    assert one(s, "StateDirectory") == "ninjahook"
    assert one(s, "WorkingDirectory") == STATE
    assert environment(s)["NINJAHOOK_INSTANCE_PATH"] == STATE
    assert one(s, "EnvironmentFile") == "/etc/ninjahook/ninjahook.env"
    assert one(s, "Restart") == "on-failure"
    install = parse_unit(UNIT.read_text())["Install"]
    assert install["WantedBy"] == ["multi-user.target"]


def test_unit_has_the_security_settings() -> None:
    s = service()
    assert one(s, "ProtectSystem") == "strict"
    assert one(s, "ProtectHome") == "yes"
    assert one(s, "PrivateTmp") == "yes"
    assert one(s, "NoNewPrivileges") == "yes"
    # Not root: a dedicated user or a dynamic one.
    user = s.get("User", [""])[-1]
    assert s.get("DynamicUser", ["no"])[-1] == "yes" or user not in ("", "root", "0")
    assert s.get("CapabilityBoundingSet") == [""]  # no capabilities at all


def test_unit_stops_gracefully_before_systemd_kills() -> None:
    s = service()
    assert one(s, "KillSignal") == "SIGTERM"
    # SIGTERM to gunicorn's master only; it stops its own workers gracefully.
    assert one(s, "KillMode") == "mixed"
    source = (ROOT / "app" / "gunicorn_conf.py").read_text()
    match = re.search(r'_env_int\("NINJAHOOK_GRACEFUL_TIMEOUT", (\d+), 0\)', source)
    assert match, "the graceful timeout's default moved: update this test"
    graceful = float(
        parse_env_file(ENV_EXAMPLE.read_text()).get("NINJAHOOK_GRACEFUL_TIMEOUT", match[1])
    )
    assert seconds(one(s, "TimeoutStopSec")) > graceful


def test_env_example_names_only_real_settings_and_holds_no_secret() -> None:
    env = parse_env_file(ENV_EXAMPLE.read_text())
    known = {s.env for s in SETTINGS} | GUNICORN_VARIABLES
    assert set(env) <= known, f"unknown variables: {set(env) - known}"
    # Every variable the file mentions, commented out or not, is a real one.
    mentioned = set(re.findall(r"\b((?:NINJAHOOK|NINJAONE)_[A-Z_]+)\b", ENV_EXAMPLE.read_text()))
    assert mentioned <= known | {"NINJAHOOK_INSTANCE_PATH"}, mentioned - known
    assert "NINJAHOOK_INSTANCE_PATH" not in env  # the unit sets it; the file would override
    for secret in ("NINJAHOOK_WEBHOOK_TOKENS", "NINJAHOOK_API_TOKENS", "NINJAONE_CLIENT_SECRET"):
        assert secret in env and env[secret] == "", f"{secret} must be empty in the example"
    assert not re.search(r"://[^/\s:@]+:(?!PASSWORD@)[^@\s]+@", ENV_EXAMPLE.read_text())
    # The example, as it is, is a valid configuration.
    load_config({"instance_path": "/nonexistent/instance", **_settings_from(env)})


def _settings_from(env: dict[str, str]) -> dict[str, str]:
    by_env = {s.env: s.name for s in SETTINGS}
    return {by_env[k]: v for k, v in env.items() if k in by_env and v != ""}


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    # verify also checks that the commands exist: stand-ins for the venv's two scripts.
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("ninjahook", "gunicorn"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    unit = tmp_path / "ninjahook.service"
    unit.write_text(UNIT.read_text().replace(f"{VENV}/bin/", f"{bin_dir}/"))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 even when it ignores a line it cannot parse: it must say nothing.
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


def test_the_units_commands_migrate_and_serve(tmp_path: Path) -> None:
    """ExecStartPre and ExecStart as systemd runs them: in WorkingDirectory, with
    Environment= and then the EnvironmentFile (the example with tokens filled in);
    `systemctl stop` is a SIGTERM to the main process (KillMode=mixed)."""
    s = service()
    state = tmp_path / "state"
    state.mkdir()
    venv_bin = str(Path(sys.executable).parent)
    env_file = parse_env_file(ENV_EXAMPLE.read_text())
    port = free_port()
    env_file |= {
        "NINJAHOOK_WEBHOOK_TOKENS": WEBHOOK_TOKEN,
        "NINJAHOOK_API_TOKENS": API_TOKEN,
        "NINJAHOOK_BIND": f"127.0.0.1:{port}",
        "NINJAHOOK_BACKGROUND_TASKS": "0",
    }
    environ = {"PATH": "/usr/bin:/bin", **environment(s), **env_file}
    environ["NINJAHOOK_INSTANCE_PATH"] = str(state)

    def command(key: str) -> list[str]:
        return shlex.split(one(s, key).replace(f"{VENV}/bin", venv_bin))

    pre = subprocess.run(
        command("ExecStartPre"), cwd=state, env=environ, capture_output=True, text=True, timeout=60
    )
    assert pre.returncode == 0, pre.stderr
    assert (state / "ninjahook.sqlite3").is_file()
    proc = subprocess.Popen(
        command("ExecStart"),
        cwd=state,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, "gunicorn exited"
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("the unit's ExecStart did not become ready")
        r = httpx.post(
            url + INGEST_PATH,
            json=condition_activity(424242),
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        )
        assert r.status_code == 200
        assert httpx.get(f"{url}/activities/424242", headers=API_HEADERS).status_code == 200
        assert (state / "gunicorn.ctl").exists()  # what `ninjahook restore` looks for
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(seconds(one(s, "TimeoutStopSec")))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0
