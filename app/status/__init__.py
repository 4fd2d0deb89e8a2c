"""``ninjahook status``, ``GET /status`` and the dashboard's status panel: is this thing working?"""
