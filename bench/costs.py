"""Where one delivery's CPU goes, measured in-process (no network, no load generator).

* The full ASGI stack (Connexion's middleware, security, validation, the handler,
  the group commit), called directly as a server would call it: one delivery at a
  time (every delivery its own transaction) and 16 at once (they share commits).
* ``ingest_activity`` alone, with no ingest hooks and then adding each registered
  hook in turn: what each extension adds to every new activity.

CPU time (``time.process_time``) is used so that other load on the machine does
not inflate the figures the way it inflates wall time.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from app.ninjaone.webhook_config import INGEST_PATH
from bench import load

TOKEN = "whk_bench_token_0123456789abcdef"


def _app(instance: Path, **overrides: Any) -> Any:
    from app.web.factory import create_app

    app = create_app(
        {
            "instance_path": str(instance),
            "webhook_tokens": TOKEN,
            "background_tasks": "0",
            **overrides,
        }
    )
    app.app.extensions["ninjahook"].db.migrate()
    return app


def _close(state: Any) -> None:
    """Write what the app still buffers, then close its connections, before its folder
    goes: the metrics extension flushes its counters on a timer otherwise."""
    from app.ingest.group_commit import stop_committer
    from app.metrics.service import buffer_for

    buffer_for(state).flush_quietly()
    stop_committer(state)
    state.db.dispose()


async def _post(app: Any, raw: bytes) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": INGEST_PATH,
        "raw_path": INGEST_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }
    delivered = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


STACK_MODES: dict[str, int] = {
    "one delivery at a time (each its own commit)": 1,
    "16 deliveries at once (group commit)": 16,
}


def stack_costs(requests: int = 400, with_hooks: bool = True) -> dict[str, float]:
    """CPU ms per delivery through the whole ASGI app, per :data:`STACK_MODES` (SQLite
    NORMAL), in process time, so whatever thread stores the batches is counted."""
    template = load.activity_template()
    costs: dict[str, float] = {}
    for mode, concurrency in STACK_MODES.items():
        with tempfile.TemporaryDirectory(prefix="ninjahook-costs-") as tmp:
            app = _app(Path(tmp))
            state = app.app.extensions["ninjahook"]
            if not with_hooks:
                state.pipeline.stages.clear()

            async def run(
                first: int, count: int, app: Any = app, concurrency: int = concurrency
            ) -> None:
                ids = iter(range(first, first + count))

                async def sender() -> None:
                    for activity_id in ids:
                        status = await _post(app, load.render(template, activity_id))
                        if status != 200:
                            raise RuntimeError(f"in-process delivery answered {status}")

                await asyncio.gather(*(sender() for _ in range(concurrency)))

            asyncio.run(run(1, 50))  # warm: caches, compiled statements, first connections
            started = time.process_time()
            asyncio.run(run(1000, requests))
            costs[mode] = 1000 * (time.process_time() - started) / requests
            _close(state)
    return costs


def hook_costs(activities: int = 300) -> list[tuple[str, float]]:
    """CPU ms per ``ingest_activity`` with no hooks, then with each hook added in turn."""
    from app.ingest.service import ingest_activity

    template = load.activity_template()
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="ninjahook-costs-") as tmp:
        app = _app(Path(tmp))
        state = app.app.extensions["ninjahook"]
        hooks = list(state.pipeline.stages)
        next_id = 1
        for count in range(len(hooks) + 1):
            state.pipeline.stages[:] = hooks[:count]
            for activity_id in range(next_id, next_id + 20):  # warm
                raw = load.render(template, activity_id)
                ingest_activity(state, raw, json.loads(raw))
            next_id += 20
            started = time.process_time()
            for activity_id in range(next_id, next_id + activities):
                raw = load.render(template, activity_id)
                ingest_activity(state, raw, json.loads(raw))
            next_id += activities
            spent = 1000 * (time.process_time() - started) / activities
            name = "store the activity (no hooks)"
            if count:
                hook = hooks[count - 1]
                name = f"+ {hook.name} stage ({hook.run.__module__}.{hook.run.__qualname__})"
            rows.append((name, spent))
        _close(state)
    return rows


def markdown(
    stack: dict[str, float], stack_bare: dict[str, float], hooks: list[tuple[str, float]]
) -> list[str]:
    """The "Where the time goes" part of the report."""
    lines = [
        "### Where the time goes (CPU per delivery, in-process, SQLite NORMAL)",
        "",
        "| whole ASGI stack, in-process | with the ingest hooks | without hooks |",
        "|---|---:|---:|",
    ]
    for mode, ms in stack.items():
        lines.append(f"| {mode} | {ms:.2f} ms | {stack_bare[mode]:.2f} ms |")
    lines += [
        "",
        "| `ingest_activity` (one transaction) | cumulative CPU | added |",
        "|---|---:|---:|",
    ]
    previous = 0.0
    for name, ms in hooks:
        lines.append(f"| {name} | {ms:.2f} ms | {ms - previous:+.2f} ms |")
        previous = ms
    return lines
