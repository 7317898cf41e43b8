"""What every service interface gets: the engine, the bus, the current caller.

Also the one way to read an ``a{sv}`` of options off the wire (:func:`parse_options`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from livefw.bus.backend import CURRENT_MESSAGE, LivefwBus, Message, Variant
from livefw.bus.polkit import Authorizer
from livefw.engine import Engine
from livefw.errors import Internal, InvalidArgument, LivefwError

__all__ = ["BusContext", "parse_options"]


#: at most this many unknown keys are named in a refusal, each cut to this length: the
#: message stays short whatever a caller sends (an ``a{sv}`` may hold thousands).
_NAMED_KEYS = 8
_KEY_MAX = 64


def _names(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = [key[:_KEY_MAX] for key in keys[:_NAMED_KEYS]]
    more = f" and {len(keys) - _NAMED_KEYS} more" if len(keys) > _NAMED_KEYS else ""
    return f"{shown}{more}"


def parse_options(
    options: Mapping[str, Variant],
    allowed: Mapping[str, str],
    error: type[LivefwError] = InvalidArgument,
    *,
    ignore_unknown: bool = False,
    require_any: bool = False,
) -> dict[str, Any]:
    """Unwrap an ``a{sv}``: known keys only, each of exactly its D-Bus type.

    ``allowed`` maps each key to its type signature (``"s"``, ``"u"``, ``"b"``, ...).
    A value of another type (a variant inside the variant included, however deep) is
    refused before anything looks at it, so no method sees a value of a type it does
    not expect. Ranges are the method's to check. Every method that takes options
    reads them here, so they are refused alike everywhere (same error, same words).

    Args:
        options: the ``a{sv}`` as the bus library hands it over.
        allowed: key -> type signature.
        error: the error class to refuse with (``InvalidFile`` where an API
            documents that name, as fwupd's Install does).
        ignore_unknown: leave out keys not in ``allowed`` instead of refusing them
            (fwupd's API: clients send options an older daemon does not know).
        require_any: refuse an empty ``a{sv}`` (a setter with nothing to set).

    Returns:
        key -> unwrapped value, for the keys present.

    Raises:
        InvalidArgument: an unknown key, a value of the wrong type, or no option
            where one is required (``error`` instead, when given).
    """
    unknown = set(options) - set(allowed)
    if unknown and not ignore_unknown:
        raise error(f"unknown options {_names(unknown)}; allowed: {sorted(allowed)}")
    if require_any and not set(options) & set(allowed):
        raise error(f"no option given; allowed: {sorted(allowed)}")
    result: dict[str, Any] = {}
    for key, expected in allowed.items():
        variant = options.get(key)
        if variant is None:
            continue
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
