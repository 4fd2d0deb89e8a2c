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

from app.config import load_config
from app.logs import install_redaction
from app.web.factory import settle_heap

wsgi_app = "app.web.factory:create_app()"
worker_class = "uvicorn_worker.UvicornWorker"
bind = os.environ.get(
    "NINJAHOOK_BIND",
    f"{os.environ.get('NINJAHOOK_HOST', '127.0.0.1')}:{os.environ.get('NINJAHOOK_PORT', '8080')}",
)
workers = int(os.environ.get("NINJAHOOK_WORKERS", "2"))
# SIGTERM: stop accepting, let in-flight requests finish for up to this many seconds.
graceful_timeout = int(os.environ.get("NINJAHOOK_GRACEFUL_TIMEOUT", "30"))
timeout = 60
keepalive = 5
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("NINJAHOOK_LOG_LEVEL", "info").lower()
# One control socket per instance folder (gunicorn creates the folder when it is missing).
control_socket = str(load_config().instance / "gunicorn.ctl")


def on_starting(server: Any) -> None:
    install_redaction()


def post_worker_init(worker: Any) -> None:
    install_redaction()
    # The worker has built the app (create_app): see app.web.factory.settle_heap.
    settle_heap()
