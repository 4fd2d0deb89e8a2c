"""Counting: ingest and notification counters, kept in the database, exposed for Prometheus."""
