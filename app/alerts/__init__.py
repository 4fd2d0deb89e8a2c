"""Condition alerts: the lifecycle folded from CONDITION activities (triggered, reset) and their history."""
