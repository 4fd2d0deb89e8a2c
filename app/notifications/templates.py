"""Message wording: Jinja2 templates with the activity, device, organization and alert in scope.

A route may set ``title`` and ``template`` (the body); without them the defaults
below apply. Templates run sandboxed, and a missing field renders as empty text
rather than failing a delivery.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

# The markup a rendered body is written in, by destination kind; every other kind gets
# plain text. Only what a template's expressions print (the activity's text, names from
# the entity cache) is escaped: the template's own markup stays markup.
MARKUPS = {"slack": "slack", "teams": "teams"}
_MARKUP_KEY = "__ninjahook_markup"

# Slack mrkdwn: "&", "<" and ">" as Slack documents; its formatting characters have no
# escape, so the lookalike full-width forms take their place.
_SLACK = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "*": "\uff0a",
        "_": "\uff3f",
        "~": "\uff5e",
        "`": "\uff40",
    }
)
# Adaptive Card TextBlocks take a Markdown subset (emphasis, links, lists): a backslash
# escapes the punctuation that makes emphasis, links, code and tags anywhere, and the
# markers that start a list, a heading or a quote at the start of a line.
_TEAMS_INLINE = re.compile(r"([\\`*_\[\]<>~|])")
_TEAMS_LINE_START = re.compile(r"^(\s*)(?:([-+#])|(\d+)\.)", re.MULTILINE)


def escape_slack(text: str) -> str:
    """``text`` that Slack's mrkdwn shows as written: no mention, link or formatting."""
    return text.translate(_SLACK)


def escape_teams(text: str) -> str:
    """``text`` that a Teams Adaptive Card TextBlock shows as written."""
    text = _TEAMS_INLINE.sub(r"\\\1", text)
    return _TEAMS_LINE_START.sub(
        lambda m: m.group(1) + (f"\\{m.group(2)}" if m.group(2) else f"{m.group(3)}\\."), text
    )


ESCAPES: dict[str, Callable[[str], str]] = {"slack": escape_slack, "teams": escape_teams}


def markup_for(kind: str) -> str:
    """The markup a destination of ``kind`` renders (``plain`` when it renders none)."""
    return MARKUPS.get(kind, "plain")


def escape(text: str, markup: str) -> str:
    """``text`` escaped for ``markup`` (unchanged for ``plain``)."""
    escaper = ESCAPES.get(markup)
    return escaper(text) if escaper else text


@jinja2.pass_context
def _finalize(context: jinja2.runtime.Context, value: Any) -> Any:
    """Every ``{{ expression }}``'s value, escaped for the markup being rendered."""
    markup = context.get(_MARKUP_KEY)
    if not markup or markup == "plain" or value is None or isinstance(value, jinja2.Undefined):
        return value
    return escape(str(value), str(markup))


ENVIRONMENT = SandboxedEnvironment(
    undefined=jinja2.ChainableUndefined,
    autoescape=False,
    keep_trailing_newline=False,
    finalize=_finalize,
)

# The title is "[STATE] stem": the stem (what and where) stays the same from the
# notification to its "resolved" follow-up, so mail clients that thread by subject keep
# them together, and the state stands in front, in brackets.
DEFAULT_STEM = (
    "{{ activity.sourceName or activity.subject or activity.activityType }}"
    "{% if device.name %} on {{ device.name }}{% endif %}"
)
DEFAULT_TITLE = (
    "[{% if event == 'resolved' %}RESOLVED{% elif event == 'reminder' %}REMINDER"
    "{% elif flapping %}FLAPPING{% else %}"
    "{{ activity.severity or activity.statusCode or activity.activityType }}{% endif %}] "
    + DEFAULT_STEM
)
DEFAULT_TEXT = (
    "{% if summary %}Triggered at {{ alert.triggeredAt }} and reset at {{ alert.resolvedAt }}, "
    "before it could be notified: "
    "{{ trigger.message or trigger.subject or activity.message or activity.subject }}"
    "{% else %}"
    "{% if event == 'resolved' %}The condition reset"
    "{% if delivery.refersTo %} (resolves notification {{ delivery.refersTo }}){% endif %}: "
    "{% elif event == 'reminder' %}Still open (reminder {{ reminder }}): "
    "{% elif flapping %}Flapping: fired {{ flapping.firings }} times within "
    "{{ flapping.window }}; quiet until it has not fired for {{ flapping.calm }}: "
    "{% endif %}"
    "{{ activity.message or activity.subject or activity.status or activity.statusCode }}"
    "{% endif %}"
)
# The links every message carries when they are known: (label, key in context["links"]).
LINK_LABELS = (("Dashboard", "alert"), ("NinjaOne", "device"))


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
    # (label, URL): the alert on the dashboard, the device in NinjaOne.
    links: tuple[tuple[str, str], ...] = ()


def render(
    context: dict[str, Any],
    title: jinja2.Template | None = None,
    template: jinja2.Template | None = None,
    markup: str = "plain",
) -> Message:
    """Render a route's title and body (or the defaults) with ``context``.

    :param context: from :func:`app.notifications.matching.template_context`.
    :param markup: the destination's (:func:`markup_for`): what the body's expressions
        print is escaped for it. The title is always plain text (a Slack header, an
        e-mail subject); a destination that shows it as markup escapes all of it.
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
    urls = context.get("links") or {}
    return Message(
        title=(title or _DEFAULT_TITLE).render(context).strip(),
        text=(template or _DEFAULT_TEXT).render({**context, _MARKUP_KEY: markup}).strip(),
        event=str(context.get("event") or "notify"),
        facts=tuple((name, str(value)) for name, value in facts if value not in (None, "")),
        context=context,
        links=tuple((label, str(urls[key])) for label, key in LINK_LABELS if urls.get(key)),
    )


def render_group(messages: list[Message], markup: str = "plain") -> Message:
    """One message for notifications a route groups (``group_by``): titled with how many
    and where they have in common, its body listing each one's title.

    Its context is the first notification's, with ``alert`` None and ``group``
    (``count``, ``alerts``: each one's alert) added."""
    first = messages[0]
    shared: list[tuple[str, str]] = []
    for label, key in (("Organization", "organization"), ("Location", "location")):
        names = {str((m.context.get(key) or {}).get("name") or "") for m in messages}
        if len(names) == 1 and "" not in names:
            shared.append((label, names.pop()))
    where = ", ".join(name for _label, name in shared)
    title = f"[{len(messages)} alerts] " + (where or first.title.split("] ", 1)[-1])
    return Message(
        title=title,
        text="\n".join("• " + escape(m.title, markup) for m in messages),
        event="notify",
        facts=(("Alerts", str(len(messages))), *shared),
        context={
            **first.context,
            "alert": None,
            "group": {
                "count": len(messages),
                "alerts": [m.context.get("alert") for m in messages],
            },
        },
    )
