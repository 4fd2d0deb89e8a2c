"""Routing: which activities go where, worded how, and sent how.

:mod:`app.notifications.routes` loads and validates the routes file,
:mod:`app.notifications.matching` decides which routes an activity matches,
:mod:`app.notifications.templates` words the message and
:mod:`app.notifications.destinations` sends it.
"""
