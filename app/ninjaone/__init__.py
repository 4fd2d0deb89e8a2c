"""NinjaOne's side: the API ``client``, ``webhook_config`` (PUT /v2/webhook),
``sync`` and backfill, and a local ``emulator`` of NinjaOne for tests and demos.
"""
