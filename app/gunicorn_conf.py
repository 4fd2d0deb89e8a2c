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
import sys
from typing import Any

from app.config import Config, ConfigError, load_config
from app.logs import configure_logging, install_redaction, logging_dict
from app.ninjaone.schedule import sources_line
from app.services import check_startup
from app.tokens import ensure_tokens
from app.web.factory import settle_heap


def _startup_config() -> Config:
    """Every setting, the instance folder and the routes file, checked before gunicorn
    starts: a bad one stops it with one line naming the variable (exit status 1)."""
    try:
        config = load_config()
        # Formatted from the first line on (check_startup may warn); gunicorn then applies
        # logconfig_dict below, the same set-up, to its own loggers too.
        configure_logging(config.log_level, config.log_format)
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
# One handler and formatter (NINJAHOOK_LOG_FORMAT) for the root logger, gunicorn.error and
# gunicorn.access, in the master and (inherited) in every worker: app.logs.logging_dict.
logconfig_dict = logging_dict(_config.log_level, _config.log_format)
# One control socket per instance folder (gunicorn creates the folder when it is missing).
control_socket = str(_config.instance / "gunicorn.ctl")


def on_starting(server: Any) -> None:
    """Once, in the master, before any worker: the instance folder's tokens (each
    generated one printed once, as `ninjahook serve` does; the workers then read them
    from the folder) and the one line saying where activities come from."""
    install_redaction()
    for notice in ensure_tokens(_config):
        # Straight to stderr, not through logging: the token is shown on purpose, once.
        sys.stderr.write("".join(f"{line}\n" for line in notice.lines()))
    sys.stderr.flush()
    server.log.info("%s", sources_line(_config))


def post_worker_init(worker: Any) -> None:
    install_redaction()
    # The worker has built the app (create_app): see app.web.factory.settle_heap.
    settle_heap()
