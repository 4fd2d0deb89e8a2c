"""gunicorn settings for `make serve`: they live in the package, app/gunicorn_conf.py."""

from app.gunicorn_conf import *  # noqa: F403
