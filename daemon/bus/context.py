"""What every service interface gets: the engine, the bus, and the current caller."""

from __future__ import annotations

from livefw.bus.backend import CURRENT_MESSAGE, LivefwBus, Message
from livefw.bus.polkit import Authorizer
from livefw.engine import Engine
from livefw.errors import Internal

__all__ = ["BusContext"]


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
