"""Inbound deliveries: from a validated payload to a committed activity.

``payload`` reads the fields once; ``service`` stores an activity exactly once and
runs the ``pipeline`` of stages inside the same transaction; ``group_commit`` lets
deliveries that arrive together share one commit; ``rejected`` keeps authenticated
bodies that failed validation.
"""
