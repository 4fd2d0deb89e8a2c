"""gunicorn settings for ninjahook: ``gunicorn -c python:app.gunicorn_conf``.

The top-level gunicorn.conf.py (``make serve``) only imports this module, so a checkout
and an installed wheel run with the same settings.

Connexion 3 is ASGI, so workers are uvicorn's. NINJAHOOK_BIND and
NINJAHOOK_WORKERS set the address and worker count; gunicorn's standard
GUNICORN_CMD_ARGS (e.g. "--workers 4 --bind 0.0.0.0:9000") overrides both.

Nothing gunicorn writes is shared between two servers on one host: its control
socket (``gunicornc``) is ``gunicorn.ctl`` in the instance folder
(NINJAHOOK_INSTANCE_PATH) instead of gunicorn's per-user default, which a second
server would take over and the first one would delete on its way out. gunicorn
writes no pidfile unless asked (``--pid``), and its workers' heartbeat files are
unique temporary files.
"""

import os
from typing import Any

from app.config import Config, ConfigError, load_config
from app.logs import install_redaction
from app.services import check_startup
from app.web.factory import settle_heap


def _startup_config() -> Config:
    """Every setting, the instance folder and the routes file, checked before gunicorn
    starts: a bad one stops it with one line naming the variable (exit status 1)."""
    try:
        config = load_config()
        check_startup(config)
    except ConfigError as exc:
        raise SystemExit(f"ninjahook: configuration: {exc}") from None
    return config


def _env_int(env: str, default: int, minimum: int) -> int:
    """A whole number of at least ``minimum`` from ``env``, or stop with one line."""
    value = os.environ.get(env, str(default))
    try:
        number = int(value.strip())
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise SystemExit(
            f"ninjahook: configuration: {env}: expected a whole number of at least "
            f"{minimum}, got {value!r}"
        )
    return number


_config = _startup_config()

wsgi_app = "app.web.factory:create_app()"
# uvicorn's worker with a deadline for request headers (app/web/server.py).
worker_class = "app.web.server.Worker"
bind = os.environ.get("NINJAHOOK_BIND", f"{_config.host}:{_config.port}")
workers = _env_int("NINJAHOOK_WORKERS", 2, 1)
# SIGTERM: stop accepting, let in-flight requests finish for up to this many seconds.
graceful_timeout = _env_int("NINJAHOOK_GRACEFUL_TIMEOUT", 30, 0)
timeout = 60
keepalive = 5
accesslog = "-"
errorlog = "-"
loglevel = _config.log_level.lower()
# One control socket per instance folder (gunicorn creates the folder when it is missing).
control_socket = str(_config.instance / "gunicorn.ctl")


def on_starting(server: Any) -> None:
    install_redaction()


def post_worker_init(worker: Any) -> None:
    install_redaction()
    # The worker has built the app (create_app): see app.web.factory.settle_heap.
    settle_heap()
