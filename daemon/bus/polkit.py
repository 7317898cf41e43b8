"""Authorization through polkit, with a uid fallback when polkit is absent."""

from __future__ import annotations

from collections import OrderedDict

import structlog

from livefw.bus.backend import (
    DBusError,
    Message,
    MessageBus,
    MessageType,
    Variant,
    call,
    call_bus_driver,
)
from livefw.config import AuthSection
from livefw.errors import AuthFailed, Internal

log = structlog.get_logger("livefw.auth")

POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_IFACE = "org.freedesktop.PolicyKit1.Authority"
#: CheckAuthorizationFlags.AllowUserInteraction (polkit's authority interface).
ALLOW_USER_INTERACTION = 1

_ABSENT = {
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
}


class Authorizer:
    """Checks callers: polkit's CheckAuthorization with the caller's bus name."""

    def __init__(self, bus: MessageBus, config: AuthSection) -> None:
        self.bus = bus
        self.config = config
        self._uids: OrderedDict[str, int] = OrderedDict()

    async def caller_uid(self, sender: str) -> int:
        """The uid behind a unique bus name (cached; unique names are never reused)."""
        if sender in self._uids:
            return self._uids[sender]
        reply = await call_bus_driver(self.bus, "GetConnectionUnixUser", "s", [sender])
        if reply.message_type == MessageType.ERROR:
            raise AuthFailed(f"cannot identify the caller {sender}: {reply.body}")
        uid = int(reply.body[0])
        self._uids[sender] = uid
        if len(self._uids) > 4096:
            self._uids.popitem(last=False)
        return uid

    async def check(
        self, sender: str, action_id: str, details: dict[str, str] | None = None
    ) -> None:
        """Raise AuthFailed unless ``sender`` may do ``action_id``."""
        if self.config.polkit != "off":
            verdict = await self._polkit(sender, action_id, details or {})
            if verdict is not None:
                if not verdict:
                    uid = await self.caller_uid(sender)
                    log.warning("auth_denied", action=action_id, uid=uid, sender=sender)
                    raise AuthFailed(
                        f"not authorized for {action_id}: polkit refused "
                        "(run as an administrator or add a polkit rule)"
                    )
                return
            if self.config.polkit == "required":
                raise AuthFailed(
                    f"{action_id} needs polkit, which is not running; start polkit "
                    'or set [auth] polkit = "auto" in livefw.conf'
                )
        uid = await self.caller_uid(sender)
        if uid not in self.config.fallback_uids:
            log.warning("auth_denied", action=action_id, uid=uid, sender=sender, polkit=False)
            raise AuthFailed(
                f"not authorized for {action_id}: polkit is not available and uid {uid} is "
                "not in [auth] fallback_uids (run as root)"
            )

    async def _polkit(self, sender: str, action_id: str, details: dict[str, str]) -> bool | None:
        """True/False from polkit, or None when polkit is not on the bus."""
        subject = ["system-bus-name", {"name": Variant("s", sender)}]
        reply = await call(
            self.bus,
            Message(
                destination=POLKIT_NAME,
                path=POLKIT_PATH,
                interface=POLKIT_IFACE,
                member="CheckAuthorization",
                signature="(sa{sv})sa{ss}us",
                body=[subject, action_id, details, ALLOW_USER_INTERACTION, ""],
            ),
        )
        if reply.message_type == MessageType.ERROR:
            if reply.error_name in _ABSENT:
                return None
            log.error("polkit_error", error=reply.error_name, body=str(reply.body))
            raise Internal(f"polkit failed to answer: {reply.error_name}")
        is_authorized, _is_challenge, _details = reply.body[0]
        return bool(is_authorized)


__all__ = ["Authorizer", "DBusError"]
