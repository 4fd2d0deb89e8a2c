"""Inbound deliveries: the payload, storing it exactly once, group commit, rejected deliveries and the pipeline of hooks that runs inside the write transaction."""
