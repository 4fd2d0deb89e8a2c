"""Database outage mid-load: 503 (never a 2xx for something unstored, never a 400), /readyz 503,
recovery without a restart, nothing acknowledged missing.

PostgreSQL is stopped for a few seconds (other test runs share the server, so it is
always started again in a ``finally``). SQLite's database lives on a tiny tmpfs that
is filled to the last byte and then emptied again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.reliability.figures import FigureBook, Figures
from tests.reliability.harness import (
    Sender,
    lost_ids,
    server_env,
    stored_counts,
    wait_for,
)
from tests.support import GunicornServer

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 3.0


def _pg_version() -> str:
    return sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]


def _pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode == 0


@contextmanager
def postgresql_outage() -> Iterator[None]:
    """Stop the local PostgreSQL cluster; the caller's block runs while it is down."""
    cluster = ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main"]
    subprocess.run([*cluster, "stop", "-m", "fast"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run([*cluster, "start"], check=False, capture_output=True)
        wait_for(_pg_ready, 30, 0.2)


@contextmanager
def tiny_filesystem(path: Path, size: str = "32m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (needs root, as in CI)."""
    path.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the disk-full outage: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextmanager
def disk_full(directory: Path) -> Iterator[None]:
    """Fill the filesystem holding ``directory`` to the last byte; free it afterwards."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # Unbuffered writes, biggest first, until not even one byte fits.
        for size in (1 << 20, 65536, 4096, 512, 1):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError:
                continue
        yield
    finally:
        os.close(fd)
        filler.unlink(missing_ok=True)


def _readyz(url: str) -> int:
    try:
        return httpx.get(url + "/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def test_database_outage_answers_503_and_recovers_without_restart(
    database_url: str, tmp_path: Path, figures: FigureBook
) -> None:
    backend = "postgresql" if "postgresql" in database_url else "sqlite"
    with _outage_setup(backend, database_url, tmp_path) as (url, outage):
        env = server_env(url, tmp_path / "instance")
        server = GunicornServer(env, workers=2, log_path=tmp_path / "gunicorn.log").start()
        workers_before = sorted(server.worker_pids())
        sender = Sender(server.url, connections=4).start()
        ready_during_outage: list[int] = []
        try:
            assert wait_for(lambda: sender.acknowledged_count() >= 100, 30)
            began = time.monotonic()
            with outage():
                assert wait_for(lambda: sender.statuses_since(began)[503] > 0, 10), (
                    sender.statuses_since(began)
                )
                ready_during_outage.append(_readyz(server.url))
                time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - began)))
                ready_during_outage.append(_readyz(server.url))
            restored = time.monotonic()
            assert wait_for(lambda: _readyz(server.url) == 200, 30), "/readyz did not recover"
            assert wait_for(lambda: sender.statuses_since(restored)[200] >= 100, 30), (
                sender.statuses_since(restored)
            )
            # Recovered by the same processes: nothing was restarted.
            assert sorted(server.worker_pids()) == workers_before
        finally:
            log = sender.stop()
            server.stop()
        lost = lost_ids(url, log.acknowledged)
        stored, _ = stored_counts(url)
    figures.record(
        Figures(
            "database outage mid-load"
            + (" (PostgreSQL stopped)" if backend == "postgresql" else " (disk full)"),
            backend,
            log.sent,
            len(log.acknowledged),
            stored,
            len(lost),
            f"503 answers {log.statuses[503]}",
        )
    )
    assert ready_during_outage == [503, 503]
    assert lost == set(), f"acknowledged but not stored: {sorted(lost)[:20]}"
    # Valid deliveries get 200 or 503: a 400 would tell NinjaOne not to retry.
    assert set(log.statuses) <= {200, 503}, log.statuses
    assert log.statuses[503] > 0
    assert sum(log.transport_errors.values()) == 0, log.transport_errors


@contextmanager
def _outage_setup(
    backend: str, database_url: str, tmp_path: Path
) -> Iterator[tuple[str, Callable[[], AbstractContextManager[None]]]]:
    """The database URL to serve and a context manager factory that causes the outage."""
    if backend == "postgresql":
        yield database_url, postgresql_outage
        return
    source = Path(sa.engine.make_url(database_url).database or "")
    with tiny_filesystem(tmp_path / "tiny") as mount:
        target = mount / "ninjahook.sqlite3"
        shutil.copy(source, target)
        yield f"sqlite:///{target}", lambda: disk_full(mount)
