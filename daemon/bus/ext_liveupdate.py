"""``org.livefw.Daemon1.LiveUpdate`` and the per-session objects.

The liveupdate device carries ``org.livefw.Daemon1.LiveUpdate`` (create, retrieve and
list sessions; kexec). Each session is an object under
``/org/livefw/Daemon1/liveupdate/sessions/<escaped kernel name>`` carrying
``org.livefw.Daemon1.LiveUpdateSession``. Session objects are kept out of the
ObjectManager and out of introspection, and a guard answers ``UnknownObject`` to
every uid but the owner's (and root's), so other users cannot see, use or finish them.

Every call that changes a session (create, retrieve, preserve, take a file back,
finish, drop) and Kexec run inside ``Engine.exclusive``: none of them overlaps a
firmware update or another state change. A Kexec does not wait: while anything holds
the engine lock it is refused with Busy naming what is in flight (docs/architecture.md,
"Engine entry points"). Listing sessions and tokens and handing out the session fd
change nothing and take no engine lock.

Unix fds: the bus library hands ``h`` arguments over as fd numbers it does not close,
and sends returned fd numbers later, from its writer. So received fds are closed here
once the device is done with them, and returned fds are duplicates the bus closes
once the reply carrying them is written (``LivefwBus.close_after_send``).
"""

import contextlib
import os
import weakref
from typing import Any

import structlog

from livefw.bus.backend import (
    Message,
    PropertyAccess,
    ServiceInterface,
    dbus_property,
    method,
)
from livefw.bus.context import BusContext, parse_options
from livefw.bus.errors import dbus_errors
from livefw.device import Device
from livefw.errors import Internal
from livefw.plugins.liveupdate import LiveUpdateDevice, LiveUpdateSession, SessionInfo
from livefw.state import Status

__all__ = [
    "INTERFACE",
    "SESSIONS_PATH",
    "SESSION_INTERFACE",
    "build",
    "path_decode",
    "path_encode",
    "session_path",
]

log = structlog.get_logger("livefw.bus")

INTERFACE = "org.livefw.Daemon1.LiveUpdate"
SESSION_INTERFACE = "org.livefw.Daemon1.LiveUpdateSession"
ROOT_PATH = "/org/livefw/Daemon1/liveupdate"
SESSIONS_PATH = ROOT_PATH + "/sessions"

ACTION_LIVEUPDATE = "org.livefw.daemon1.liveupdate"
ACTION_KEXEC = "org.livefw.daemon1.kexec"


def path_encode(label: str) -> str:
    """Escape a string into one object path element, like ``sd_bus_path_encode``.

    Everything outside ``[A-Za-z0-9]`` (and a leading digit) becomes ``_xx`` hex; the
    empty string becomes ``_``.
    """
    if not label:
        return "_"
    out = []
    for index, byte in enumerate(label.encode()):
        char = chr(byte)
        if char.isascii() and (char.isalpha() or (index > 0 and char.isdigit())):
            out.append(char)
        else:
            out.append(f"_{byte:02x}")
    return "".join(out)


def path_decode(element: str) -> str:
    """Reverse :func:`path_encode` (``ValueError`` on malformed input)."""
    if element == "_":
        return ""
    raw = bytearray()
    index = 0
    while index < len(element):
        if element[index] == "_":
            raw.append(int(element[index + 1 : index + 3], 16))
            index += 3
        else:
            raw.append(ord(element[index]))
            index += 1
    return raw.decode()


def session_path(kernel_name: str) -> str:
    """The object path of a session."""
    return f"{SESSIONS_PATH}/{path_encode(kernel_name)}"


def _return_fd(ctx: BusContext, fd: int) -> int:
    """A duplicate of ``fd`` for a reply; the bus closes it once the reply is written."""
    dup = os.dup(fd)
    ctx.bus.close_after_send(dup)
    return dup


class LiveUpdateInterface(ServiceInterface):
    """Create, retrieve and list sessions; kexec."""

    def __init__(self, ctx: BusContext, device: LiveUpdateDevice) -> None:
        super().__init__(INTERFACE)
        self.ctx = ctx
        self.device = device
        self.sessions: dict[str, SessionInterface] = {}
        self.sync()

    def sync(self) -> None:
        """Export objects for new sessions, unexport gone ones, signal state changes."""
        current = {info.kernel_name: info for info in self.device.list_sessions(0)}
        for kernel_name in list(self.sessions):
            if kernel_name not in current:
                self.ctx.bus.unexport(session_path(kernel_name))
                del self.sessions[kernel_name]
        for kernel_name, info in current.items():
            exported = self.sessions.get(kernel_name)
            if exported is None:
                exported = SessionInterface(self, kernel_name, info)
                self.ctx.bus.export(session_path(kernel_name), exported)
                self.sessions[kernel_name] = exported
            else:
                exported.refresh(info)

    @method()
    @dbus_errors
    async def CreateSession(self, name: "s", options: "a{sv}") -> "o":
        parsed = parse_options(options, {"label": "s"})
        uid = await self.ctx.authorize(ACTION_LIVEUPDATE)
        async with self.ctx.engine.exclusive(self.device, "live-update session create"):
            info = await self.device.create_session(uid, name, parsed)
        self.sync()
        return session_path(info.kernel_name)

    @method()
    @dbus_errors
    async def RetrieveSession(self, name: "s", options: "a{sv}") -> "o":
        parsed = parse_options(options, {})
        uid = await self.ctx.authorize(ACTION_LIVEUPDATE)
        async with self.ctx.engine.exclusive(self.device, "live-update session retrieve"):
            info = await self.device.retrieve_session(uid, name, parsed)
        self.sync()
        return session_path(info.kernel_name)

    @method()
    @dbus_errors
    async def ListSessions(self) -> "a(ssuso)":
        uid = await self.ctx.caller_uid()
        return [
            [info.name, info.state, info.owner, info.label, session_path(info.kernel_name)]
            for info in self.device.list_sessions(uid)
        ]

    @method()
    @dbus_errors
    async def Kexec(self, options: "a{sv}") -> None:
        parse_options(options, {})
        await self.ctx.authorize(ACTION_KEXEC)
        # refused, not queued, while a firmware update or another change is in flight
        async with self.ctx.engine.exclusive(
            self.device, "kexec", wait=False, status=Status.DEVICE_BUSY
        ):
            await self.device.kexec()


class SessionInterface(ServiceInterface):
    """One brokered session."""

    def __init__(self, parent: LiveUpdateInterface, kernel_name: str, info: SessionInfo) -> None:
        super().__init__(SESSION_INTERFACE)
        self.parent = parent
        self.ctx = parent.ctx
        self.kernel_name = kernel_name
        self.info = info

    def session(self, uid: int) -> LiveUpdateSession:
        """The device's session object, if ``uid`` may use it (NotFound/AuthFailed)."""
        return self.parent.device.session(uid, self.kernel_name)

    def refresh(self, info: SessionInfo) -> None:
        """Emit PropertiesChanged for what changed."""
        changed: dict[str, Any] = {}
        if info.state != self.info.state:
            changed["State"] = info.state
        self.info = info
        if changed:
            self.emit_properties_changed(changed)

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> "s":
        return self.info.name

    @dbus_property(access=PropertyAccess.READ)
    def KernelName(self) -> "s":
        return self.info.kernel_name

    @dbus_property(access=PropertyAccess.READ)
    def Owner(self) -> "u":
        return self.info.owner

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> "s":
        return self.info.state

    @dbus_property(access=PropertyAccess.READ)
    def Label(self) -> "s":
        return self.info.label

    @method()
    @dbus_errors
    async def Preserve(self, fd: "h", token: "t", options: "a{sv}") -> None:
        try:
            parsed = parse_options(options, {"label": "s"})
            uid = await self.ctx.authorize(ACTION_LIVEUPDATE)
            async with self.ctx.engine.exclusive(self.parent.device, "live-update preserve"):
                await self.session(uid).preserve(fd, token, parsed)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.parent.sync()

    @method()
    @dbus_errors
    async def ListTokens(self) -> "at":
        uid = await self.ctx.authorize(ACTION_LIVEUPDATE)
        return sorted(self.session(uid).tokens())

    @method()
    @dbus_errors
    async def Retrieve(self, token: "t") -> "h":
        uid = await self.ctx.authorize(ACTION_LIVEUPDATE)
        async with self.ctx.engine.exclusive(self.parent.device, "live-update file retrieve"):
            handle = await self.session(uid).retrieve_file(token)
        try:
            return _return_fd(self.ctx, handle.fileno())
        finally:
            await handle.close()

    @method()
    @dbus_errors
    async def Finish(self, options: "a{sv}") -> None:
        parsed = parse_options(options, {"force": "b"})
        uid = await self.ctx.authorize(ACTION_LIVEUPDATE)
        async with self.ctx.engine.exclusive(self.parent.device, "live-update session finish"):
            await self.session(uid).finish(parsed)
        self.parent.sync()

    @method()
    @dbus_errors
    async def Drop(self) -> None:
        uid = await self.ctx.authorize(ACTION_LIVEUPDATE)
        async with self.ctx.engine.exclusive(self.parent.device, "live-update session drop"):
            await self.session(uid).drop()
        self.parent.sync()

    @method()
    @dbus_errors
    async def GetSessionFd(self) -> "h":
        uid = await self.ctx.authorize(ACTION_LIVEUPDATE)
        handle = self.session(uid).client_handle()
        return _return_fd(self.ctx, handle.fileno())


#: buses on which the session prefix is already hidden and guarded.
_GUARDED: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _install_guard(ctx: BusContext, device: LiveUpdateDevice) -> None:
    if ctx.bus in _GUARDED:
        return
    _GUARDED.add(ctx.bus)
    ctx.bus.hide_prefix(ROOT_PATH)

    async def guard(msg: Message) -> bool:
        element = (msg.path or "")[len(SESSIONS_PATH) + 1 :].split("/", 1)[0]
        if not element:
            return True  # the sessions folder itself; its children are hidden
        try:
            kernel_name = path_decode(element)
        except (ValueError, UnicodeDecodeError):
            return False
        owner = device.owner_of(kernel_name)
        if owner is None:
            return True  # nothing there: the bus answers UnknownObject itself
        uid = await ctx.authorizer.caller_uid(str(msg.sender))
        return uid in (0, owner)

    ctx.bus.guard_prefix(SESSIONS_PATH, guard)


def build(ctx: BusContext, device: Device) -> ServiceInterface:
    """The LiveUpdate interface for the liveupdate device (and its session objects)."""
    if not isinstance(device, LiveUpdateDevice):
        raise Internal(f"{INTERFACE} is only for the liveupdate device")
    _install_guard(ctx, device)
    return LiveUpdateInterface(ctx, device)
