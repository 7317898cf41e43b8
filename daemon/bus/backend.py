"""livefwd's bus connection (:class:`LivefwBus`), and the D-Bus names the rest imports.

The bus layer, the CLI, tests and bench import D-Bus names from here; they come from
:mod:`livefw.bus.dbuslib`, the one module that imports the library (dbus-fast or
dbus-next, chosen there) and fixes its writer. Reply bodies marshalled ahead are
:mod:`livefw.bus.prebuilt`'s.

:class:`LivefwBus` adds what livefwd needs on top of the library's message bus:

* ``InterfacesAdded``/``InterfacesRemoved`` are emitted from the ObjectManager's
  path (dbus-next emits them from the object's own path, which
  ``GDBusObjectManagerClient`` and ``busctl`` monitors filtered on the manager miss);
* path prefixes can be hidden from ``GetManagedObjects`` and from the parent's
  introspection (live-update sessions), and guarded by an async check of the caller
  before any message reaches them;
* the message being dispatched is available to method implementations through
  :data:`CURRENT_MESSAGE` (asyncio tasks copy the context at creation);
* Unix fds that arrive with a message are owned here: only those an ``h`` argument
  hands to a method survive dispatch, every other one is closed (see
  :meth:`LivefwBus._claim_fds`);
* signals from a guarded prefix go, as unicast copies, only to the connections the
  guard would let call that path (see :meth:`LivefwBus.send`);
* a method call or signal over :data:`MAX_BODY` (or :data:`MAX_HEADER`) never reaches
  the library's unmarshaller: its bytes are dropped as they arrive, its fds closed, and
  a call is answered ``org.freedesktop.DBus.Error.LimitsExceeded`` (see
  :mod:`livefw.bus.framing` and :meth:`LivefwBus._refuse_oversized`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import inspect
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import structlog

from livefw.bus.dbuslib import (
    BACKEND,
    BusType,
    DBusError,
    ErrorType,
    Message,
    MessageBus,
    MessageFlag,
    MessageType,
    NameFlag,
    PropertyAccess,
    RequestNameReply,
    ServiceInterface,
    Variant,
    call,
    call_bus_driver,
    dbus_property,
    disconnect,
    intr,
    marshal,
    method,
    signal,
    wait_for_disconnect,
)
from livefw.bus.framing import (
    INTERFACE,
    MEMBER,
    METHOD_CALL,
    PATH,
    BoundedSocket,
    LargeCall,
    RefusedMessage,
)
from livefw.bus.prebuilt import (
    MANAGED_OBJECT,
    MANAGED_OBJECTS,
    Part,
    Prebuilt,
    _prebuilt_message,
    built,
    dict_body,
    dict_entry,
)
from livefw.errors import ERROR_PREFIX, Busy, InvalidArgument

__all__ = [
    "BACKEND",
    "CURRENT_MESSAGE",
    "MAX_BODY",
    "BusType",
    "DBusError",
    "ErrorType",
    "Guard",
    "LivefwBus",
    "Message",
    "MessageBus",
    "MessageFlag",
    "MessageType",
    "NameFlag",
    "PropertyAccess",
    "RequestNameReply",
    "ServiceInterface",
    "Variant",
    "call",
    "call_bus_driver",
    "dbus_property",
    "disconnect",
    "intr",
    "marshal",
    "method",
    "signal",
    "wait_for_disconnect",
]

log = structlog.get_logger("livefw.bus")

#: the message whose method call is being served (set before dispatch).
CURRENT_MESSAGE: contextvars.ContextVar[Message | None] = contextvars.ContextVar(
    "livefw_current_message", default=None
)

Guard = Callable[[Message], Awaitable[bool]]

_ASYNC: dict[Any, bool] = {}


def _is_async(function: Any) -> bool:
    """``inspect.iscoroutinefunction``, remembered (property getters do not change)."""
    known = _ASYNC.get(function)
    if known is None:
        known = _ASYNC[function] = inspect.iscoroutinefunction(function)
    return known


#: interface class -> whether every property getter is synchronous
_SYNC_GETTERS: dict[type, bool] = {}


def _sync_getters(interface: ServiceInterface) -> bool:
    """Whether every property of ``interface`` is read without awaiting (kept per class)."""
    known = _SYNC_GETTERS.get(type(interface))
    if known is None:
        known = _SYNC_GETTERS[type(interface)] = not any(
            _is_async(prop.prop_getter) for prop in ServiceInterface._get_properties(interface)
        )
    return known


def _readable_values(interface: ServiceInterface) -> dict[str, Any]:
    """Every readable, enabled property of ``interface`` as ``Variant``s, read now.

    The libraries' ``_get_all_property_values`` answer for synchronous getters, in the
    same order, without its callback per value (and its scan of the whole result after
    each one). Raises what a getter or ``Variant`` raises.
    """
    values: dict[str, Any] = {}
    for prop in ServiceInterface._get_properties(interface):
        if prop.disabled or not prop.access.readable():
            continue
        values[prop.name] = Variant(prop.signature, getattr(interface, prop.prop_getter.__name__))
    return values


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def _type_end(signature: str, start: int) -> int:
    """Where the complete type starting at ``signature[start]`` ends (exclusive)."""
    code = signature[start]
    if code == "a":
        return _type_end(signature, start + 1)
    if code in "({":
        depth, index = 0, start
        while True:
            if signature[index] in "({":
                depth += 1
            elif signature[index] in ")}":
                depth -= 1
                if depth == 0:
                    return index + 1
            index += 1
    return start + 1


def _top_level_types(signature: str) -> list[str]:
    """The complete types of a (bus-validated) signature: ``"sha{sv}"`` -> s, h, a{sv}."""
    types, index = [], 0
    while index < len(signature):
        end = _type_end(signature, index)
        types.append(signature[index:end])
        index = end
    return types


#: how a method takes the fds of its message (see :meth:`LivefwBus._claim_fds`).
_FD_ARGS = "args"
_FD_LIST = "list"
#: most received fds held by method calls that have not replied yet, per caller
#: connection and in all; beyond that a call is refused (Busy) with its fds closed.
#: With the live-update sessions (up to 2 x 744) and livefwd's own (< 64) this stays
#: well inside the unit's LimitNOFILE=4096.
MAX_FDS_PER_SENDER = 16
MAX_FDS_IN_FLIGHT = 512

#: Largest body of a method call or signal livefwd lets the D-Bus library unmarshal;
#: bigger ones are skipped unread and a call gets LimitsExceeded (issue 13). The
#: biggest bodies livefwd's methods legitimately take: fwupd's SetApprovedFirmware /
#: SetBlockedFirmware with 1,024 SHA-256 checksums (firmware_lists.CHECKSUMS_MAX; 72 bytes
#: each on the wire: 73,729), a fwctl Rpc with a request of [plugins.fwctl]
#: max_request_size (64 KiB by default; configured over 92 KiB, that one method is
#: allowed the size plus 4 KiB, every other member keeps this limit: a
#: framing.LargeCall, see livefw.daemon.bus_large_calls), SetHints with 32 hints of
#: 64/256 characters (at most 4 bytes each in UTF-8: ~41 KiB). Everything else takes
#: a few hundred bytes; payloads come as fds. 96 KiB is 1.33 times the biggest. The
#: cost it bounds, measured with the costliest body shape (an array of byte variants,
#: 4 bytes a value) on the 2-core VM: dbus-next unmarshals 96 KiB in ~45 ms idle (~75
#: ms at a load of 3; 128 KiB took 60-105 ms), dbus-fast in ~1 ms (``make
#: bench-limits``); a 32 MiB body, which the system bus lets through (dbus-daemon's
#: max_message_size, 33554432 in /usr/share/dbus-1/system.conf), would take tens of
#: seconds with dbus-next.
MAX_BODY = 96 * 1024
#: Largest header-fields array of a method call or signal: a header names a path,
#: interface, member, destination, sender (bus names: 255 bytes at most) and a
#: signature; only an object path can be longer, and livefwd's are under 200 bytes.
MAX_HEADER = 16 * 1024
#: refused messages are logged at most once per this many seconds (with a count)
REFUSAL_LOG_INTERVAL = 10.0


class LivefwBus(MessageBus):
    """The library's asyncio bus with ObjectManager and hidden-path behaviour fixed."""

    def __init__(
        self,
        bus_address: str | None = None,
        bus_type: BusType = BusType.SYSTEM,
        object_manager_path: str = "/",
        max_body: int = MAX_BODY,
        large_calls: Sequence[LargeCall] = (),
        announce: bool = True,
    ) -> None:
        super().__init__(
            bus_address=bus_address,  # None means: use bus_type
            bus_type=bus_type,
            negotiate_unix_fd=True,
        )
        self.object_manager_path = object_manager_path
        self._hidden: list[str] = []
        self._guards: list[tuple[str, Guard]] = []
        self._guard_tasks: set[asyncio.Future[None]] = set()
        self._batching = False
        #: whether exports and unexports send InterfacesAdded/Removed (see start_announcing)
        self._announce = announce
        self._fd_list_interfaces: set[str] = set()
        # (sender, serial) of calls holding fds until their reply -> how many
        self._fd_calls: dict[tuple[str, int], int] = {}
        self._fds_by_sender: collections.Counter[str] = collections.Counter()
        self._fds_held = 0
        #: id(interface) -> (interface, the paths it is exported at)
        self._exported_at: dict[int, tuple[ServiceInterface, list[str]]] = {}
        #: id(interface) -> (interface, its GetManagedObjects property map), for
        #: interfaces whose class sets ``livefw_cache_properties``
        self._property_maps: dict[int, tuple[ServiceInterface, dict[str, Any]]] = {}
        #: GetManagedObjects kept marshalled: path -> its entry's bytes (objects whose
        #: interfaces all keep their maps), the listed paths, the whole body
        self._object_fragments: dict[str, Part] = {}
        self._managed_paths_cache: tuple[str, list[tuple[str, Any]]] | None = None
        self._managed_body: tuple[str, Prebuilt] | None = None
        #: largest body of a call or signal handed to the library (see MAX_BODY)
        self.max_body = max_body
        #: the method calls allowed more (fwctl's Rpc, see livefw.daemon)
        self.large_calls = tuple(large_calls)
        self.reader: BoundedSocket | None = None
        self._refusals_logged_at = -REFUSAL_LOG_INTERVAL
        self._refusals_unlogged = 0

    # ------------------------------------------------------ oversized messages

    async def _authenticate(self) -> None:
        """Authenticate, then put :class:`BoundedSocket` where the library reads.

        Both libraries read messages from ``self._sock`` (dbus-fast hands it to its
        reader right after this returns; dbus-next to each new Unmarshaller); the
        writer keeps the socket itself.
        """
        await super()._authenticate()
        self.reader = BoundedSocket(
            self._sock, self.max_body, MAX_HEADER, self._refuse_oversized, self.large_calls
        )
        self._sock = self.reader  # type: ignore[assignment]  # the socket's duck
        if BACKEND == "next":
            self._unmarshaller = self._create_unmarshaller()

    def _refuse_oversized(self, refused: RefusedMessage) -> None:
        """A call or signal over the limits was skipped: answer a call, log (throttled)."""
        try:
            limit = refused.limit
            if refused.reason == "body":
                size, what = refused.body_length, "body"
            else:
                size, what = refused.header_length, "header"
            text = f"message {what} of {size} bytes is over livefwd's limit of {limit} bytes: " + (
                refused.detail or "pass firmware and other large data as a file descriptor"
            )
            answered = False
            sender = refused.sender
            if refused.wants_reply and sender and not self._disconnected:
                self.send(
                    Message(
                        message_type=MessageType.ERROR,
                        destination=sender,
                        reply_serial=refused.serial,
                        error_name=ErrorType.LIMITS_EXCEEDED.value,
                        signature="s",
                        body=[text],
                    )
                )
                answered = True
            now = time.monotonic()
            if now - self._refusals_logged_at < REFUSAL_LOG_INTERVAL:
                self._refusals_unlogged += 1
                return
            path = refused.fields.get(PATH)
            log.warning(
                "bus_message_refused",
                sender=sender,
                kind="method_call" if refused.message_type == METHOD_CALL else "signal",
                path=path if isinstance(path, str) else f"<{path} bytes>",
                interface=refused.text(INTERFACE),
                member=refused.text(MEMBER),
                body_bytes=refused.body_length,
                header_bytes=refused.header_length,
                byte_order=refused.byte_order,
                limit=limit,
                fds_closed=refused.fds,
                answered=answered,
                not_logged_before=self._refusals_unlogged,
            )
            self._refusals_logged_at = now
            self._refusals_unlogged = 0
        except Exception:  # never into the library's reader: it would drop the connection
            log.exception("bus_refusal_failed", serial=refused.serial)

    # ----------------------------------------------------------- hidden objects

    def hide_prefix(self, prefix: str) -> None:
        """Keep objects under ``prefix`` out of GetManagedObjects and introspection."""
        self._hidden.append(prefix)
        self._object_changed()

    def guard_prefix(self, prefix: str, guard: Guard) -> None:
        """Let a method call under ``prefix`` through only if ``guard(msg)`` is true.

        Refused calls get ``org.freedesktop.DBus.Error.UnknownObject``, as if the
        object did not exist. Signals emitted from below ``prefix`` (e.g.
        PropertiesChanged) are not broadcast: each connection the guard would let
        call the emitting path gets its own unicast copy (see :meth:`send`).
        """
        self._guards.append((prefix, guard))

    def hand_over_fd_list(self, interface: str) -> None:
        """Methods of ``interface`` with an ``h`` argument take every fd of the message.

        fwupd's convention (libfwupd puts its own fd number in the ``h`` slot and the
        daemon takes the message's fd list); such a method must close them all.
        """
        self._fd_list_interfaces.add(interface)

    def _is_hidden(self, path: str) -> bool:
        return any(_under(path, prefix) for prefix in self._hidden)

    def _guard_for(self, path: str) -> Guard | None:
        for prefix, guard in self._guards:
            if _under(path, prefix):
                return guard
        return None

    # ----------------------------------------------------------- dispatching

    def _process_message(self, msg: Message) -> None:
        if msg.message_type == MessageType.METHOD_CALL and msg.path and self._guards:
            guard = self._guard_for(msg.path)
            if guard is not None:
                task = asyncio.ensure_future(self._guarded(msg, guard))
                self._guard_tasks.add(task)
                task.add_done_callback(self._guard_tasks.discard)
                return
        self._dispatch(msg)

    async def _guarded(self, msg: Message, guard: Guard) -> None:
        try:
            allowed = await guard(msg)
        except Exception:
            allowed = False
        if not allowed:
            self._close_fds(msg, keep=())
            if not msg.flags & MessageFlag.NO_REPLY_EXPECTED:
                self.send(
                    Message.new_error(
                        msg, ErrorType.UNKNOWN_OBJECT.value, f"no object at {msg.path}"
                    )
                )
            return
        self._dispatch(msg)

    def _dispatch(self, msg: Message) -> None:
        """The library's dispatch, after the message's fds have been claimed."""
        try:
            claimed = self._claim_fds(msg)
        except Exception:
            log.exception("bus_fd_claim_failed", member=msg.member, sender=msg.sender)
            self._close_fds(msg, keep=())
            claimed = False
            if msg.message_type == MessageType.METHOD_CALL:
                self._refuse(msg, ErrorType.INTERNAL_ERROR.value, "the message was not understood")
        if not claimed:
            return
        token = CURRENT_MESSAGE.set(msg)
        try:
            super()._process_message(msg)
        finally:
            CURRENT_MESSAGE.reset(token)

    # ------------------------------------------------------------ Unix fds

    def _claim_fds(self, msg: Message) -> bool:
        """Close every fd of ``msg`` that no method will own; False: do not dispatch.

        The libraries leave received fds open for good unless a method closes them,
        and only a method with an ``h`` argument ever sees one: fds on a Ping, on
        GetDevices, on an unknown method or a signal, or beyond the one an ``h``
        refers to, would pile up until the process runs out of descriptors. So:

        * a method call for an exported method whose signature has top-level ``h``
          arguments keeps the fds those arguments refer to (the method closes them);
          an ``h`` that refers to no attached fd is refused here (``InvalidArgument``)
          (dbus-fast would otherwise hand the raw index to the method as if it were
          a descriptor, and the method would read and close one of the daemon's own);
          on an interface registered with :meth:`hand_over_fd_list` the method
          takes them all; what a call keeps counts against :data:`MAX_FDS_PER_SENDER`
          and :data:`MAX_FDS_IN_FLIGHT` until its reply is sent (:meth:`_hold_fds`);
        * a reply to a call this connection made keeps its fds (the caller's);
        * everything else (other calls, signals, unsolicited replies) keeps none.

        Closed entries of ``msg.unix_fds`` become -1, so nothing can close or use the
        number again. At most 16 fds arrive per message (the library's ``recvmsg``
        buffer, and dbus-daemon's ``max_message_unix_fds`` on the system bus).
        """
        fds = msg.unix_fds
        signature = msg.signature or ""
        if not fds and "h" not in signature:
            return True
        keep: tuple[int, ...] = ()
        kind = msg.message_type
        if kind == MessageType.METHOD_CALL:
            convention = self._fd_convention(msg)
            if convention == _FD_LIST:
                keep = tuple(range(len(fds)))
            elif convention == _FD_ARGS:
                keep = tuple(
                    int(value)
                    for value, code in zip(msg.body, _top_level_types(signature), strict=False)
                    if code == "h"
                )
                if any(index >= len(fds) for index in keep):
                    self._close_fds(msg, keep=())
                    self._refuse(
                        msg,
                        ERROR_PREFIX + InvalidArgument.name,
                        f"{msg.member} needs a Unix file descriptor: its 'h' argument names "
                        f"descriptor #{max(keep)} of the call, which carries {len(fds)}",
                    )
                    return False
            if keep and not self._hold_fds(msg, len(set(keep)), convention == _FD_LIST):
                return False
        elif kind != MessageType.SIGNAL and msg.reply_serial in self._method_return_handlers:
            return True
        self._close_fds(msg, keep=keep)
        return True

    def _hold_fds(self, msg: Message, count: int, fd_list: bool) -> bool:
        """Count ``count`` fds as held by ``msg`` until its reply; False: refused.

        A call that expects no reply may not hand over fds (nothing would say when the
        method is done with them); a caller over :data:`MAX_FDS_PER_SENDER`, or all
        callers over :data:`MAX_FDS_IN_FLIGHT`, gets Busy (fwupd's API:
        ``LimitsExceeded``). The fds of a refused call are closed.
        """
        sender = str(msg.sender)
        refusal = None
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            refusal = "a call that hands over file descriptors must expect a reply"
        elif self._fds_by_sender[sender] + count > MAX_FDS_PER_SENDER:
            refusal = (
                f"this connection already has {self._fds_by_sender[sender]} file descriptors "
                "in calls that have not finished; wait for them and try again"
            )
        elif self._fds_held + count > MAX_FDS_IN_FLIGHT:
            refusal = "too many calls with file descriptors are in progress; try again later"
        if refusal is not None:
            self._close_fds(msg, keep=())
            log.info("bus_fds_refused", sender=sender, member=msg.member, reason=refusal)
            name = ErrorType.LIMITS_EXCEEDED.value if fd_list else ERROR_PREFIX + Busy.name
            self._refuse(msg, name, refusal)
            return False
        self._fd_calls[(sender, msg.serial)] = count
        self._fds_by_sender[sender] += count
        self._fds_held += count
        return True

    def _release_fds(self, reply: Message) -> None:
        """The call ``reply`` answers is over: its fds no longer count."""
        count = self._fd_calls.pop((str(reply.destination), reply.reply_serial), 0)
        if count:
            sender = str(reply.destination)
            self._fds_by_sender[sender] -= count
            if self._fds_by_sender[sender] <= 0:
                del self._fds_by_sender[sender]
            self._fds_held -= count

    def _fd_convention(self, msg: Message) -> str | None:
        """How the method ``msg`` will be dispatched to takes fds (None: it takes none).

        The same lookup as the libraries' own: the exported interface by name (any
        interface when the call names none, with dbus-fast; dbus-next needs the
        name), then the member with exactly this signature.
        """
        signature = msg.signature or ""
        if "h" not in signature:
            return None
        exported = self._path_exports.get(msg.path)
        if not exported:
            return None
        interfaces = exported.values() if isinstance(exported, dict) else exported
        for interface in interfaces:
            if msg.interface is None:
                if BACKEND == "next":
                    continue
            elif interface.name != msg.interface:
                continue
            for member in ServiceInterface._get_methods(interface):
                if (
                    member.name == msg.member
                    and member.in_signature == signature
                    and not member.disabled
                ):
                    if "h" not in _top_level_types(signature):
                        return None
                    return _FD_LIST if interface.name in self._fd_list_interfaces else _FD_ARGS
        return None

    def _close_fds(self, msg: Message, keep: tuple[int, ...]) -> None:
        fds = msg.unix_fds
        closed = 0
        for index, fd in enumerate(fds):
            if index in keep or fd < 0:
                continue
            with contextlib.suppress(OSError):
                os.close(fd)
            fds[index] = -1
            closed += 1
        if closed:
            log.debug(
                "bus_fds_closed",
                count=closed,
                kept=len(keep),
                sender=msg.sender,
                interface=msg.interface,
                member=msg.member,
            )

    def _refuse(self, msg: Message, error_name: str, text: str) -> None:
        if not msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            self.send(Message.new_error(msg, error_name, text))

    # ------------------------------------------------------ guarded signals

    def send(self, msg: Message) -> Any:
        """Send a message; a broadcast signal from a guarded path goes as unicasts.

        A PropertiesChanged from a live-update session object names the session in
        its path and carries its state: broadcast, every connection on the bus would
        see it. So each connection the path's guard admits gets a copy addressed to
        it (dbus-daemon delivers a message with a destination to that connection
        only), and no one else does.

        A reply whose one argument is a :class:`Prebuilt` goes with its bytes as body.
        """
        body = msg.body
        if len(body) == 1 and type(body[0]) is Prebuilt:
            msg = _prebuilt_message(msg, body[0])
        if self._fd_calls and msg.message_type in (MessageType.METHOD_RETURN, MessageType.ERROR):
            self._release_fds(msg)
        if (
            msg.message_type == MessageType.SIGNAL
            and not msg.destination
            and msg.path
            and self._guards
        ):
            guard = self._guard_for(msg.path)
            if guard is not None:
                task = asyncio.ensure_future(self._send_to_admitted(msg, guard))
                self._guard_tasks.add(task)
                task.add_done_callback(self._guard_tasks.discard)
                return task
        return super().send(msg)

    async def _send_to_admitted(self, msg: Message, guard: Guard) -> None:
        try:
            reply = await self.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="ListNames",
                )
            )
        except Exception:  # the connection went away: no one to tell
            reply = None
        if reply is None or reply.message_type != MessageType.METHOD_RETURN:
            log.warning("bus_signal_dropped", path=msg.path, member=msg.member)
            return
        peers = [
            name for name in reply.body[0] if name.startswith(":") and name != self.unique_name
        ]

        async def admitted(peer: str) -> bool:
            probe = Message(
                destination=str(self.unique_name),
                path=msg.path,
                interface=msg.interface,
                member=msg.member,
                sender=peer,
            )
            try:
                return bool(await guard(probe))
            except Exception:
                return False

        verdicts = await asyncio.gather(*(admitted(peer) for peer in peers))
        for peer, verdict in zip(peers, verdicts, strict=True):
            if verdict and not self._disconnected:
                super().send(
                    Message(
                        message_type=MessageType.SIGNAL,
                        destination=peer,
                        path=msg.path,
                        interface=msg.interface,
                        member=msg.member,
                        signature=msg.signature,
                        body=msg.body,
                    )
                )

    # ------------------------------------------------- ObjectManager overrides

    def export_object(self, path: str, interfaces: list[ServiceInterface]) -> None:
        """Export several interfaces on one path with a single InterfacesAdded.

        ``export()`` one interface at a time would emit one signal per interface, and
        an ObjectManager client would see a half-built object first.
        """
        self._batching = True
        try:
            for interface in interfaces:
                self.export(path, interface)
        finally:
            self._batching = False
        self._send_interfaces_added(path, interfaces)

    def export(self, path: str, interface: ServiceInterface) -> None:
        """Export ``interface`` at ``path`` and index where it is (see signals below)."""
        super().export(path, interface)
        self._object_changed(path)
        self._object_changed()
        entry = self._exported_at.get(id(interface))
        if entry is None or entry[0] is not interface:
            self._exported_at[id(interface)] = (interface, [path])
        elif path not in entry[1]:
            entry[1].append(path)

    def unexport(self, path: str, interface: ServiceInterface | str | None = None) -> None:
        """Unexport as the library does; forget the interfaces' index and cached maps."""
        exported = self._path_exports.get(path)
        if exported is not None:
            present = list(exported.values() if isinstance(exported, dict) else exported)
            if isinstance(interface, str):
                present = [i for i in present if i.name == interface]
            elif interface is not None:
                present = [i for i in present if i is interface]
            for removed in present:
                entry = self._exported_at.get(id(removed))
                if entry is not None and entry[0] is removed and path in entry[1]:
                    entry[1].remove(path)
                    if not entry[1]:
                        del self._exported_at[id(removed)]
                self._property_maps.pop(id(removed), None)
        super().unexport(path, interface)
        self._object_changed(path)
        self._object_changed()

    def _interface_signal_notify(
        self,
        interface: ServiceInterface,
        interface_name: str,
        member: str,
        signature: str,
        body: list[Any],
        unix_fds: list[int] | None = None,
    ) -> None:
        """Send a signal of ``interface`` from its path, found by index.

        The libraries find the path by scanning every exported object per signal:
        a property change cost time proportional to the number of devices (15,000
        objects at 10,000 devices; bench/scale.py). A PropertiesChanged also drops
        the interface's cached GetManagedObjects map and its objects' kept bytes.
        """
        entry = self._exported_at.get(id(interface))
        if member == "PropertiesChanged":
            self._property_maps.pop(id(interface), None)
            if entry is not None and entry[0] is interface:
                for path in entry[1]:
                    self._object_changed(path)
        if entry is None or entry[0] is not interface or len(entry[1]) != 1:
            # not exported here, or at several paths: the library's way
            super()._interface_signal_notify(
                interface, interface_name, member, signature, body, unix_fds or []
            )
            return
        self.send(
            Message.new_signal(
                path=entry[1][0],
                interface=interface_name,
                member=member,
                signature=signature,
                body=body,
                unix_fds=unix_fds or [],
            )
        )

    def start_announcing(self) -> None:
        """Send InterfacesAdded/Removed from now on (a bus made with ``announce=False``).

        livefwd exports every object before it requests its first name and calls this
        just before the request, as GLib's ``GDBusObjectManagerServer`` recommends
        (gio/gdbusobjectmanagerserver.c, ``g_dbus_object_manager_server_new()``: export
        the objects first, then set the connection, "to avoid InterfacesAdded signals
        being emitted"). Nobody can use the start-up signals: dbus-daemon delivers a
        signal to a rule that names a sender only while the sending connection owns that
        name (bus/signals.c ``match_rule_matches``), and a client that sees the name
        appear asks GetManagedObjects, which lists every object. At 999 devices they
        were ~1,500 signals and ~60 ms of the start (bench/NOTES.md item 14). Objects
        exported or removed after this call are announced; the request is sent after
        it, so dbus-daemon routes those signals with the name already owned.
        """
        self._announce = True

    def _send_interfaces_added(self, path: str, interfaces: list[ServiceInterface]) -> None:
        """One InterfacesAdded from the manager path with every interface's properties.

        Not sent before :meth:`start_announcing` on a bus made with ``announce=False``.
        Interfaces whose getters are all synchronous are read in one pass
        (:func:`_readable_values`); the library's per-value callbacks cost ~40 ms of a
        999-device start (bench/NOTES.md item 14). An interface whose getter raises is
        sent with no properties, as the library's way sends it.
        """
        if not self._announce:
            return
        if self._disconnected or self._is_hidden(path):
            return
        if all(_sync_getters(interface) for interface in interfaces):
            found: dict[str, Any] = {}
            for interface in interfaces:
                try:
                    found[interface.name] = _readable_values(interface)
                except Exception:
                    found[interface.name] = {}
            self._interfaces_added(path, found)
            return
        values: dict[str, Any] = {}

        def on_values(iface: Any, result: Any, user_data: Any, error: Any) -> None:
            values[iface.name] = {} if error is not None else result
            if len(values) == len(interfaces):
                self._interfaces_added(path, values)

        for interface in interfaces:
            ServiceInterface._get_all_property_values(interface, on_values)

    def _interfaces_added(self, path: str, values: dict[str, Any]) -> None:
        self._manager_signal("InterfacesAdded", "oa{sa{sv}}", [path, values])

    def _manager_signal(self, member: str, signature: str, body: list[Any]) -> None:
        """Send an ``org.freedesktop.DBus.ObjectManager`` signal from the manager's path."""
        self.send(
            Message.new_signal(
                path=self.object_manager_path,
                interface="org.freedesktop.DBus.ObjectManager",
                member=member,
                signature=signature,
                body=body,
            )
        )

    def _emit_interface_added(self, path: str, interface: ServiceInterface) -> None:
        if not self._batching:
            self._send_interfaces_added(path, [interface])

    def _emit_interface_removed(self, path: str, removed_interfaces: list[str]) -> None:
        if self._disconnected or not self._announce or self._is_hidden(path):
            return
        self._manager_signal("InterfacesRemoved", "oas", [path, removed_interfaces])

    def _default_get_managed_objects_handler(self, msg: Message, send_reply: Any) -> None:
        if msg.path != self.object_manager_path:
            send_reply(
                Message.new_error(
                    msg,
                    ErrorType.UNKNOWN_METHOD.value,
                    f"{msg.path} is not an ObjectManager; use {self.object_manager_path}",
                )
            )
            return
        try:
            body = self._managed_objects_body(msg.path)
        except Exception:  # a value the marshaller refuses: the library's way and error
            log.exception("bus_managed_objects_unmarshallable", path=msg.path)
            body = None
        if body is not None:
            send_reply(Message.new_method_return(msg, MANAGED_OBJECTS, [body]))
            return
        # an async getter or a getter error: the library's way (its errors and all)
        exports = self._path_exports
        hidden = {path: exports.pop(path) for path in list(exports) if self._is_hidden(path)}
        try:
            super()._default_get_managed_objects_handler(msg, send_reply)
        finally:
            exports.update(hidden)

    def _managed_paths(self, root: str) -> list[tuple[str, Any]]:
        """(path, its interfaces) of the objects GetManagedObjects on ``root`` lists.

        Kept until an export, unexport or hidden prefix changes the answer.
        """
        cached = self._managed_paths_cache
        if cached is not None and cached[0] == root:
            return cached[1]
        below = root + "/"
        found = [
            (path, exported)
            for path, exported in self._path_exports.items()
            if (root == "/" or path.startswith(below)) and not self._is_hidden(path)
        ]
        self._managed_paths_cache = (root, found)
        return found

    def _object_entry(self, exported: Any) -> tuple[dict[str, dict[str, Any]], bool] | None:
        """One object's ``a{sa{sv}}`` and whether it may be kept; None: not synchronously.

        An interface whose class sets ``livefw_cache_properties = True`` promises that
        every change of a property is announced with PropertiesChanged (or that its
        properties never change): its map is built once and reused until then
        (:meth:`_interface_signal_notify` drops it), as the compat interface keeps
        device dicts. At 1,000 devices that is most of the reply (issue 17 item 4). An
        interface without readable properties has nothing to change.
        """
        maps = self._property_maps
        interfaces = exported.values() if isinstance(exported, dict) else exported
        entry: dict[str, dict[str, Any]] = {}
        keep = True
        for interface in interfaces:
            cached = maps.get(id(interface))
            if cached is not None and cached[0] is interface:
                entry[interface.name] = cached[1]
                continue
            if not _sync_getters(interface):
                return None
            try:
                values = _readable_values(interface)
            except Exception:
                return None
            entry[interface.name] = values
            if not values or getattr(interface, "livefw_cache_properties", False):
                maps[id(interface)] = (interface, values)
            else:
                keep = False
        return entry, keep

    def _forget_maps(self, exported: Any) -> None:
        """Drop the kept property maps of an object whose entry is kept as bytes.

        Its bytes stand for them until one of its interfaces changes, and then the
        object's entry is built again from its getters: the maps (a Variant per
        property, ~4 MiB at 1,000 devices) would only be a second copy of the bytes.
        """
        maps = self._property_maps
        for interface in exported.values() if isinstance(exported, dict) else exported:
            maps.pop(id(interface), None)

    def _managed_objects(self, root: str) -> dict[str, dict[str, dict[str, Any]]] | None:
        """GetManagedObjects' answer built in one pass, or None to leave it to the library.

        The libraries collect every property through a callback per value and, after
        each interface, scan the whole result for missing values: quadratic in the
        number of objects (0.45 s per call at 1,500 objects with dbus-next;
        bench/NOTES.md). With synchronous getters the same values come from one
        loop. Same paths (children of ``root``, hidden prefixes left out), same
        properties (readable, not disabled), same ``Variant(signature, value)``.
        """
        result: dict[str, dict[str, dict[str, Any]]] = {}
        for path, exported in self._managed_paths(root):
            found = self._object_entry(exported)
            if found is None:
                return None
            result[path] = found[0]
        return result

    def _managed_objects_body(self, root: str) -> Prebuilt | None:
        """:meth:`_managed_objects` marshalled, from each object's bytes kept until it changes.

        An object whose interfaces all keep their maps (see :meth:`_object_entry`) is
        marshalled once, and again only after a PropertiesChanged of one of them or an
        export or unexport at its path; the others are marshalled on every call. When
        every object was kept and nothing changed, the whole body is reused.
        """
        whole = self._managed_body
        if whole is not None and whole[0] == root:
            return whole[1]
        fragments = self._object_fragments
        listed = self._managed_paths(root)
        # (size, kept) of each entry, as it is joined in
        placed: list[tuple[int, bool]] = []
        failed = False

        def entries() -> Iterator[Part]:
            nonlocal failed
            for path, exported in listed:
                fragment = fragments.get(path)
                keep = True
                if fragment is None:
                    found = self._object_entry(exported)
                    if found is None:
                        failed = True
                        return
                    fragment = dict_entry(MANAGED_OBJECT, path, found[0])
                    keep = found[1]
                    if keep:
                        self._forget_maps(exported)
                placed.append((len(fragment), keep))
                yield fragment

        starts: list[int] = []
        data = dict_body(entries(), starts)
        if failed:
            return None
        body = Prebuilt(MANAGED_OBJECTS, data)
        view = memoryview(data)
        parts: dict[str, Part] = {
            path: view[start : start + size]
            for (path, _), start, (size, keep) in zip(listed, starts, placed, strict=True)
            if keep
        }
        if len(parts) == len(listed):
            # every entry is kept, as a view of the kept body: the bytes are in memory
            # once, and entries of objects no longer listed go with the bodies they pinned
            self._object_fragments = parts
            self._managed_body = (root, body)
        else:
            # this body is not kept: copies, so that no entry pins a body of one call
            for path, part in parts.items():
                if path not in fragments:
                    fragments[path] = bytes(part)
        built(data)
        return body

    def _object_changed(self, path: str | None = None) -> None:
        """Forget the kept GetManagedObjects bytes of ``path`` (None: the list of paths)."""
        self._managed_body = None
        if path is None:
            self._managed_paths_cache = None
        else:
            self._object_fragments.pop(path, None)

    def _introspect_export_path(self, path: str) -> Any:
        node = super()._introspect_export_path(path)
        node.nodes = [
            child
            for child in node.nodes
            if not self._is_hidden(path.rstrip("/") + "/" + child.name)
        ]
        return node
