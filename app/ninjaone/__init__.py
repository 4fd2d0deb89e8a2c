"""NinjaOne's side: the API client, webhook configuration, sync and backfill, and a local emulator of NinjaOne for tests and demos."""
