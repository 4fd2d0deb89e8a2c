"""(a) The floor: a bare Flask endpoint that answers 204 and reads nothing else."""

from __future__ import annotations

from flask import Flask, request

app = Flask(__name__)


@app.post("/webhooks/ninjarmm/activity")
def receive() -> tuple[str, int]:
    # Read the body, as any receiver must, so the figure is not a no-read shortcut.
    request.get_data()
    return "", 204


@app.get("/readyz")
def ready() -> tuple[str, int]:
    return "", 204
