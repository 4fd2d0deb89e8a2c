"""Pruning what is older than the retention window."""
