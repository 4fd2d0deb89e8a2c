"""The servers under test, each a gunicorn with two workers on 127.0.0.1.

* (a) :func:`bare_flask`: a Flask endpoint that answers 204;
* (b) :func:`generated_stub`: what openapi-generator's python-flask generator makes of
  our own webhook.yaml (Connexion 2; validates, stores nothing, answers a constant),
  generated into a temporary directory with its own virtualenv;
* (c)/(d) :func:`ninjahook`: the real receiver with the ``make serve`` settings
  (gunicorn.conf.py, uvicorn workers, migrations applied first).

CPU is read from /proc for the master and its workers; RSS for each worker.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    # utime and stime are fields 14 and 15 of /proc/pid/stat (11 and 12 after the name).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    """Resident memory of one process in MiB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0.0
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) / 1024 if match else 0.0


@dataclass
class Server:
    """A gunicorn started from ``command`` with ``env``, in ``cwd``."""

    label: str
    description: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    token: str = ""
    log_path: Path | None = None
    ready_path: str = "/readyz"
    after_stop: list[Callable[[], None]] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0

    def start(self, timeout: float = 60) -> Server:
        """Start gunicorn and wait until it answers ``ready_path``."""
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        began = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.label}: gunicorn exited with {self.proc.returncode} "
                    f"(log: {self.log_path})"
                )
            try:
                httpx.get(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=1)
                if len(self.worker_pids()) >= 1:
                    self.started_in = time.perf_counter() - began
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.label}: not ready after {timeout:.0f} s (log: {self.log_path})")

    def worker_pids(self) -> list[int]:
        """PIDs of the gunicorn workers."""
        if self.proc is None:
            return []
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split()]

    def cpu_seconds(self) -> float:
        """CPU used so far by the master and its current workers."""
        assert self.proc is not None
        return _cpu_seconds(self.proc.pid) + sum(_cpu_seconds(p) for p in self.worker_pids())

    def worker_rss(self) -> list[float]:
        """RSS of each worker, MiB."""
        return [rss_mib(p) for p in self.worker_pids()]

    def stop(self) -> None:
        """SIGTERM, wait, then run the clean-ups."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for cleanup in self.after_stop:
            cleanup()
        self.after_stop.clear()


def _gunicorn_sync(
    label: str, description: str, app: str, cwd: Path, gunicorn: Path, workers: int, log: Path
) -> Server:
    port = free_port()
    return Server(
        label=label,
        description=description,
        command=[
            str(gunicorn),
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            app,
        ],
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=cwd,
        port=port,
        log_path=log,
    )


def bare_flask(workers: int, log: Path) -> Server:
    """(a) A bare Flask endpoint answering 204, under gunicorn's sync workers."""
    return _gunicorn_sync(
        "a",
        "bare Flask endpoint answering 204 (gunicorn sync workers)",
        "bare_flask:app",
        # Not the repository root: gunicorn would load its gunicorn.conf.py (ninjahook's).
        ROOT / "bench",
        VENV_BIN / "gunicorn",
        workers,
        log,
    )


# The generated spec keeps our x-bearerInfoFunc/x-apikeyInfoFunc; the stub has none of
# our code, so they point at the token functions openapi-generator writes (which accept
# any token: the stub checks that one is present, nothing more).
def _stub_security(spec: str) -> dict[str, str]:
    """Our security functions (``x-bearerInfoFunc: app.web.auth.…``) by the generated
    stub's function for the same scheme (``info_from_<scheme name>``)."""
    found = re.finditer(
        r"^    (\w+):\n(?:      .*\n)*?      x-(?:bearer|apikey|basic)InfoFunc: (\S+)$",
        spec,
        re.M,
    )
    return {match.group(2): f"info_from_{match.group(1)}" for match in found}


_STUB_WSGI = """\
import connexion

from openapi_server import encoder

app = connexion.App("openapi_server", specification_dir="./openapi/")
app.app.json_encoder = encoder.JSONEncoder
app.add_api("openapi.yaml", arguments={"title": "ninjahook"}, pythonic_params=True)
application = app.app
"""


def _stub_venv(requirements: Path, cache: Path, say: Callable[[str], None]) -> Path:
    """A virtualenv with the stub's requirements (and gunicorn), cached by their hash."""
    digest = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()[:12]
    venv = cache / f"stub-venv-{digest}"
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    say(f"installing the stub's requirements (Connexion 2) into {venv} …")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements), "gunicorn"],
        capture_output=True,
        text=True,
        check=False,
    )
    if installed.returncode != 0:
        raise RuntimeError(f"installing the stub's requirements failed:\n{installed.stderr}")
    (venv / ".complete").touch()
    return venv


def _without_null_enum_values(spec: str) -> str:
    """webhook.yaml with ``null`` left out of inline enums (``nullable: true`` beside them
    already allows it): openapi-generator's python-flask models fail on a null enum value
    (NullPointerException on ``isString``). Only response schemas have one, so the stub's
    ingest operation is the same."""
    return re.sub(r"(enum: \[[^\]\n]*?), null\]", r"\1]", spec)


def generated_stub(
    workers: int, workdir: Path, cache: Path, log: Path, say: Callable[[str], None]
) -> Server:
    """(b) openapi-generator's python-flask server for webhook.yaml, under gunicorn.

    :param workdir: a temporary directory to generate into (never the repository).
    :param cache: where the stub's virtualenv is kept between runs.
    """
    generator = VENV_BIN / "openapi-generator-cli"
    if not generator.exists():
        raise RuntimeError("openapi-generator-cli is missing: run `make venv` (dev extra)")
    out = workdir / "stub"
    say("generating the python-flask stub from webhook.yaml with openapi-generator …")
    source = workdir / "webhook-for-stub.yaml"
    source.write_text(_without_null_enum_values((ROOT / "webhook.yaml").read_text()))
    subprocess.run(
        [
            str(generator),
            "generate",
            "-i",
            str(source),
            "-g",
            "python-flask",
            "-o",
            str(out),
            "--skip-validate-spec",
        ],
        check=True,
        capture_output=True,
    )
    spec = out / "openapi_server" / "openapi" / "openapi.yaml"
    text = spec.read_text()
    for ours, theirs in _stub_security(text).items():
        text = text.replace(ours, f"openapi_server.controllers.security_controller.{theirs}")
    spec.write_text(text)
    (out / "stub_wsgi.py").write_text(_STUB_WSGI)
    venv = _stub_venv(out / "requirements.txt", cache, say)
    return _gunicorn_sync(
        "b",
        "python-flask stub generated by openapi-generator from webhook.yaml "
        "(Connexion 2, validates, stores nothing; gunicorn sync workers)",
        "stub_wsgi:application",
        out,
        venv / "bin" / "gunicorn",
        workers,
        log,
    )


def ninjahook(
    label: str,
    description: str,
    *,
    workers: int,
    database_url: str,
    instance: Path,
    token: str,
    log: Path,
    extra_env: dict[str, str] | None = None,
    app: str | None = None,
) -> Server:
    """(c)/(d) The receiver as ``make serve`` runs it: migrate, then gunicorn.conf.py.

    :param app: another ``module:variable`` for gunicorn to serve with the same settings
        (bench/core_app.py), instead of gunicorn.conf.py's ``create_app()``.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NINJAHOOK_")}
    env.update(
        {
            "NINJAHOOK_INSTANCE_PATH": str(instance),
            "NINJAHOOK_DATABASE_URL": database_url,
            "NINJAHOOK_WEBHOOK_TOKENS": token,
            "NINJAHOOK_BIND": f"127.0.0.1:{port}",
            "NINJAHOOK_WORKERS": str(workers),
            **(extra_env or {}),
        }
    )
    migrated = subprocess.run(
        [str(VENV_BIN / "ninjahook"), "migrate"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if migrated.returncode != 0:
        raise RuntimeError(f"{label}: `ninjahook migrate` failed: {migrated.stderr.strip()}")
    return Server(
        label=label,
        description=description,
        command=[
            str(VENV_BIN / "gunicorn"),
            "-c",
            str(ROOT / "gunicorn.conf.py"),
            *([app] if app else []),
        ],
        env=env,
        cwd=ROOT,
        port=port,
        token=token,
        log_path=log,
    )
