"""Condition alerts: each alert's lifecycle (triggered, reset) folded from its
CONDITION activities, and its history.
"""
