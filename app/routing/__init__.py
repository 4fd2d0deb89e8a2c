"""Routing: which activities go where, worded how, and sent how.

:mod:`app.routing.config` loads and validates the routes file,
:mod:`app.routing.matching` decides which routes an activity matches,
:mod:`app.routing.templates` words the message and
:mod:`app.routing.destinations` sends it.
"""
