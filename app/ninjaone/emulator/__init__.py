"""A NinjaOne emulator: a real HTTP server that speaks the parts of Public API v2 ninjahook uses.

It implements the OAuth2 token endpoint, ``PUT``/``DELETE /v2/webhook``,
``/v2/organizations``, ``/v2/locations``, ``/v2/devices`` and ``/v2/activities``
with NinjaOne's pagination and shapes, and, like NinjaOne, POSTs each new
activity to the configured webhook URL with the configured headers, once, with
no retry. It can drop or duplicate deliveries and inject API faults (429, 5xx,
non-JSON), so the client and the receiver are tested over loopback, not mocks.

Use :class:`Emulator` as a context manager, or ``ninjahook emulator`` from a shell.
"""

from __future__ import annotations

from app.ninjaone.emulator.server import Delivery, Emulator, Fault

__all__ = ["Delivery", "Emulator", "Fault"]
