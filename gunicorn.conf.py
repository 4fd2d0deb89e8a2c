"""gunicorn settings for `make serve`.

Connexion 3 is ASGI, so workers are uvicorn's. NINJAHOOK_BIND and
NINJAHOOK_WORKERS set the address and worker count; gunicorn's standard
GUNICORN_CMD_ARGS (e.g. "--workers 4 --bind 0.0.0.0:9000") overrides both.
"""

import os

from app.web.factory import settle_heap
from app.logs import install_redaction

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


def on_starting(server):
    install_redaction()


def post_worker_init(worker):
    install_redaction()
    # The worker has built the app (create_app): see app.web.factory.settle_heap.
    settle_heap()
