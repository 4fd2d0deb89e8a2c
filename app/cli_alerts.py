"""CLI commands (see app.cli.COMMAND_MODULES); none yet."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
