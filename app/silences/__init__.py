"""Silences, NinjaOne maintenance windows and operator actions (issue 14).

A silence holds back the notifications of the activities its matchers match for a
while; a device in NinjaOne maintenance notifies nothing while its window lasts. Both
keep the activity and record its notifications as ``suppressed`` with the reason.
Operator actions (silence, expire, acknowledge, reset, retry) are recorded with who
did them.
"""
