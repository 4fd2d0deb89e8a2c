"""Counting: ingest and notification counters, kept in the database and exposed for Prometheus."""
