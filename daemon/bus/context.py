"""What every service interface gets: the engine, the bus, the current caller.

Also the one way to read an ``a{sv}`` of options off the wire (:func:`parse_options`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from livefw.bus.backend import CURRENT_MESSAGE, LivefwBus, Message, Variant
from livefw.bus.polkit import Authorizer
from livefw.engine import Engine
from livefw.errors import Internal, InvalidArgument, LivefwError

__all__ = ["BusContext", "parse_options"]


def parse_options(
    options: dict[str, Variant],
    allowed: Mapping[str, str],
    error: type[LivefwError] = InvalidArgument,
) -> dict[str, Any]:
    """Unwrap an ``a{sv}``: known keys only, each of exactly its D-Bus type.

    ``allowed`` maps each key to its type signature (``"s"``, ``"u"``, ``"b"``, ...).
    A value of another type (a variant inside the variant included, however deep) is
    refused before anything looks at it, so no method sees a value of a type it does
    not expect. Ranges are the method's to check.

    Raises:
        InvalidArgument: an unknown key or a value of the wrong type (``error``
            instead, e.g. ``InvalidFile``, where an API documents another name).
    """
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise error(f"unknown options {unknown}; allowed: {sorted(allowed)}")
    result: dict[str, Any] = {}
    for key, variant in options.items():
        expected = allowed[key]
        if variant.signature != expected:
            raise error(
                f"option {key!r} must be of type {expected!r}, not {variant.signature[:16]!r}"
            )
        result[key] = variant.value
    return result


class BusContext:
    """Shared by the manager, device and per-technology interfaces.

    Attributes:
        engine: the engine (business rules live there).
        bus: the daemon's bus connection.
        authorizer: polkit checks.
    """

    def __init__(self, engine: Engine, bus: LivefwBus, authorizer: Authorizer) -> None:
        self.engine = engine
        self.bus = bus
        self.authorizer = authorizer

    def message(self) -> Message:
        """The method call being served."""
        msg = CURRENT_MESSAGE.get()
        if msg is None:
            raise Internal("no D-Bus call in this context")
        return msg

    def sender(self) -> str:
        """The caller's unique bus name."""
        sender = self.message().sender
        if not sender:
            raise Internal("the call has no sender")
        return str(sender)

    async def caller_uid(self) -> int:
        """The caller's uid."""
        return await self.authorizer.caller_uid(self.sender())

    async def authorize(self, action_id: str, details: dict[str, str] | None = None) -> int:
        """Check the caller against a polkit action; return its uid.

        Raises:
            AuthFailed: the caller may not do this.
        """
        sender = self.sender()
        await self.authorizer.check(sender, action_id, details)
        return await self.authorizer.caller_uid(sender)
