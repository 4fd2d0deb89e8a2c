"""Message wording: Jinja2 templates with the activity, device, organization and alert in scope.

A route may set ``title`` and ``template`` (the body); without them the defaults
below apply. Templates run sandboxed, and a missing field renders as empty text
rather than failing a delivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

ENVIRONMENT = SandboxedEnvironment(
    undefined=jinja2.ChainableUndefined, autoescape=False, keep_trailing_newline=False
)

DEFAULT_TITLE = (
    "{% if event == 'resolved' %}Resolved{% else %}"
    "{{ activity.severity or activity.statusCode or activity.activityType }}{% endif %}: "
    "{{ activity.sourceName or activity.subject or activity.activityType }}"
    "{% if device.name %} on {{ device.name }}{% endif %}"
)
DEFAULT_TEXT = (
    "{% if event == 'resolved' %}The condition reset"
    "{% if delivery.refersTo %} (resolves notification {{ delivery.refersTo }}){% endif %}: "
    "{% endif %}"
    "{{ activity.message or activity.subject or activity.status or activity.statusCode }}"
)


def compile_template(source: str) -> jinja2.Template:
    """A sandboxed template; raises :class:`jinja2.TemplateSyntaxError` when malformed."""
    return ENVIRONMENT.from_string(source)


_DEFAULT_TITLE = compile_template(DEFAULT_TITLE)
_DEFAULT_TEXT = compile_template(DEFAULT_TEXT)


@dataclass(frozen=True)
class Message:
    """What a destination sends, before its kind shapes it."""

    title: str
    text: str
    event: str
    facts: tuple[tuple[str, str], ...]
    context: dict[str, Any]


def render(
    context: dict[str, Any],
    title: jinja2.Template | None = None,
    template: jinja2.Template | None = None,
) -> Message:
    """Render a route's title and body (or the defaults) with ``context``.

    :param context: from :func:`app.notifications.matching.template_context`.
    :raises jinja2.TemplateError: when a template fails at render time (the worker
        records it as the delivery's error).
    """
    activity = context.get("activity") or {}
    device = context.get("device") or {}
    organization = context.get("organization") or {}
    facts = [
        ("Organization", organization.get("name") or organization.get("id")),
        ("Device", device.get("name") or activity.get("deviceId")),
        ("Severity", activity.get("severity")),
        ("Status", activity.get("statusCode")),
        ("Activity", activity.get("id")),
        ("Alert", (context.get("alert") or {}).get("key")),
    ]
    return Message(
        title=(title or _DEFAULT_TITLE).render(context).strip(),
        text=(template or _DEFAULT_TEXT).render(context).strip(),
        event=str(context.get("event") or "notify"),
        facts=tuple((name, str(value)) for name, value in facts if value not in (None, "")),
        context=context,
    )
