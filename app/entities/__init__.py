"""The local cache of NinjaOne devices, organizations and locations."""
