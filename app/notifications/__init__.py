"""Outbound notifications: ``routes`` (the routes file), ``matching``,
``templates``, the ``outbox`` with its sending worker, ``destinations`` (how each kind
is sent) and ``reads`` (what the API and dashboard show of them).
"""
