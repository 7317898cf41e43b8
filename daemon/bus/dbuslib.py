"""The one module that imports the D-Bus library, with the fixes every connection gets.

Everything else in livefw imports D-Bus names from here or, in the bus layer, CLI,
tests and bench, from :mod:`livefw.bus.backend`, which re-exports them; so the
backend can be swapped in one place.

Backend selection: ``LIVEFW_DBUS_BACKEND=fast`` (the default: dbus-fast, the
maintained fork of dbus-next with Cython-compiled marshalling) or
``LIVEFW_DBUS_BACKEND=next`` (dbus-next, pure Python, last released in 2021; the
``next`` extra). The variable is read once, at import; both backends get the same
fixes (the EAGAIN-safe writer :class:`_Writer`, fds closed after send, the libraries'
per-message fd scan replaced by :func:`_contains_type`; in
:class:`livefw.bus.backend.LivefwBus` the ObjectManager and hidden-path behaviour and
cached property maps) and ``make test`` runs the bus-level integration tests on both.
:data:`BACKEND` says which one is in use. (Type checking sees dbus-next's names; the
two libraries have the same API.)
"""

from __future__ import annotations

import array
import collections
import contextlib
import importlib
import importlib.util
import inspect
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

#: the D-Bus library in use: "fast" (dbus-fast) or "next" (dbus-next). Unset, it is
#: dbus-fast, a dependency; a venv made before dbus-fast became one (no dbus_fast
#: module) gets dbus-next rather than failing. Asked for explicitly, it is what runs.
BACKEND = os.environ.get("LIVEFW_DBUS_BACKEND", "").strip().lower() or (
    "fast" if importlib.util.find_spec("dbus_fast") is not None else "next"
)
if BACKEND not in ("next", "fast"):
    raise ImportError(
        f"LIVEFW_DBUS_BACKEND={BACKEND!r} is not a D-Bus backend: use 'fast' (dbus-fast, "
        "the default) or 'next' (dbus-next)"
    )

if TYPE_CHECKING or BACKEND == "next":
    from dbus_next import introspection as intr
    from dbus_next.aio.message_bus import MessageBus as _AioMessageBus
    from dbus_next.aio.message_bus import _MessageWriter
    from dbus_next.constants import (
        BusType,
        ErrorType,
        MessageFlag,
        MessageType,
        NameFlag,
        PropertyAccess,
        RequestNameReply,
    )
    from dbus_next.errors import DBusError
    from dbus_next.message import Message
    from dbus_next.service import ServiceInterface, dbus_property, method, signal
    from dbus_next.signature import Variant
else:
    # The same names from dbus-fast (imported by name so that type checking does not
    # depend on whether the optional extra is installed).
    try:
        _fast_aio = importlib.import_module("dbus_fast.aio.message_bus")
    except ImportError as _error:
        raise ImportError(
            "LIVEFW_DBUS_BACKEND=fast needs dbus-fast: pip install 'livefw[fast]'"
        ) from _error
    _fast_constants = importlib.import_module("dbus_fast.constants")
    _fast_service = importlib.import_module("dbus_fast.service")
    intr = importlib.import_module("dbus_fast.introspection")
    _AioMessageBus = _fast_aio.MessageBus
    _MessageWriter = _fast_aio._MessageWriter
    BusType = _fast_constants.BusType
    ErrorType = _fast_constants.ErrorType
    MessageFlag = _fast_constants.MessageFlag
    MessageType = _fast_constants.MessageType
    NameFlag = _fast_constants.NameFlag
    PropertyAccess = _fast_constants.PropertyAccess
    RequestNameReply = _fast_constants.RequestNameReply
    DBusError = importlib.import_module("dbus_fast.errors").DBusError
    Message = importlib.import_module("dbus_fast.message").Message
    ServiceInterface = _fast_service.ServiceInterface
    dbus_property = _fast_service.dbus_property
    method = _fast_service.method
    signal = _fast_service.signal
    Variant = importlib.import_module("dbus_fast.signature").Variant
    _Marshaller = importlib.import_module("dbus_fast._private.marshaller").Marshaller
if TYPE_CHECKING or BACKEND == "next":
    from dbus_next._private.marshaller import Marshaller as _Marshaller

__all__ = [
    "BACKEND",
    "BusType",
    "DBusError",
    "ErrorType",
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
    "marshal_body",
    "method",
    "signal",
    "wait_for_disconnect",
]


def _contains_type(signature: Any, body: list[Any], token: str) -> bool:
    """Whether a message body of ``signature`` holds a value of type ``token``.

    The same answer as the library's ``signature_contains_type`` (which both use on
    every method call and reply to find file descriptors), found with string tests
    instead of walking signature trees: a type code is one character and ``h``/``v``
    appear in a signature only as types, so a signature without ``token`` or ``v``
    needs no walk, and a variant is only descended into when its own signature has
    a ``v``. The library's version cost ~35 µs per device dict of a GetDevices reply
    (bench/NOTES.md); this one a few string tests per variant.
    """
    text = signature if isinstance(signature, str) else signature.signature
    if token in text:
        return True
    if "v" not in text:
        return False
    stack = list(body)
    while stack:
        member = stack.pop()
        if type(member) is Variant:
            inner = member.signature
            if token in inner:
                return True
            if "v" in inner:
                stack.append(member.value)
        elif type(member) is list:
            stack.extend(member)
        elif type(member) is dict:
            stack.extend(member.values())
    return False


#: the library's own version (tests compare the two).
_library_contains_type: Callable[[Any, list[Any], str], bool] | None = None


def _use_fast_type_scan() -> None:
    """Put :func:`_contains_type` where the library's service code looks it up."""
    global _library_contains_type
    package = "dbus_next" if BACKEND == "next" else "dbus_fast"
    util = importlib.import_module(f"{package}._private.util")
    if _library_contains_type is None:
        _library_contains_type = util.signature_contains_type
    for loaded in (importlib.import_module(f"{package}.service"), util):
        if hasattr(loaded, "signature_contains_type"):
            setattr(loaded, "signature_contains_type", _contains_type)  # noqa: B010


_use_fast_type_scan()


def _marshaller_without_cycles() -> None:
    """dbus-next: a Marshaller lets go of its writers once it has marshalled.

    dbus-next's ``Marshaller`` keeps ``writers``, a dict of its own bound methods: a
    reference cycle per Marshaller (two per message sent, body and header), holding
    the message's buffer and body until the cyclic collector finds it. Start-up runs
    without the collector (livefw.launch) and then freezes what it built
    (livefw.daemon): at 1,000 devices the ~1,500 InterfacesAdded signals' marshallers,
    buffers and property values, ~12 MiB, stayed for the process's life (bench/NOTES.md,
    issue 17 item 2). Dropping the dict after ``marshall()`` (also when it raises)
    leaves no cycle; a Marshaller that marshals again gets a new dict. dbus-fast's
    compiled Marshaller has no such dict.
    """
    if BACKEND != "next":
        return
    cls: Any = _Marshaller
    original = cls.marshall
    if getattr(original, "livefw_no_cycles", False):
        return
    names = {code: bound.__name__ for code, bound in cls("", []).writers.items()}

    def marshall(self: Any) -> Any:
        if self.writers is None:
            self.writers = {code: getattr(self, name) for code, name in names.items()}
        try:
            return original(self)
        finally:
            self.writers = None

    marshall.livefw_no_cycles = True  # type: ignore[attr-defined]
    cls.marshall = marshall


_marshaller_without_cycles()


class _ServiceInspect:
    """``inspect`` as the library's service module sees it, D-Bus members kept per class.

    ``ServiceInterface.__init__`` (both libraries) walks ``inspect.getmembers(type(self))``
    for every instance and keeps the members that are D-Bus properties, methods and
    signals: ``dir()`` of the class, a ``getattr`` per attribute (the ~80 of ``object``
    and ServiceInterface included) and a sort, 1,500 times for a machine of 999
    devices (~30 ms of its start, bench/NOTES.md item 14). Here the walk runs once per
    class and keeps only those members, in the walk's order; the constructor's loop
    skips every other member anyway, so each instance gets the same lists as before.
    A class's D-Bus members are fixed before its first instance is made (livefw adds
    the Device getters at import, :mod:`livefw.bus.device`). Every other ``inspect``
    function, and ``getmembers`` with a predicate, is the real one.
    """

    def __init__(self, service: Any) -> None:
        self._service = service
        self._members: dict[type, list[tuple[str, Any]]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)

    def getmembers(self, cls: Any, predicate: Any = None) -> list[tuple[str, Any]]:
        if predicate is not None or not isinstance(cls, type):
            return inspect.getmembers(cls, predicate)
        found = self._members.get(cls)
        if found is None:
            found = self._members[cls] = [
                (name, member)
                for name, member in inspect.getmembers(cls)
                if self._is_dbus_member(member)
            ]
        return found

    def _is_dbus_member(self, member: Any) -> bool:
        if type(member) is self._service._Property:
            return True
        member_dict = getattr(member, "__dict__", {})
        return "__DBUS_METHOD" in member_dict or "__DBUS_SIGNAL" in member_dict


def _keep_members_per_class() -> None:
    """Put :class:`_ServiceInspect` where the library's ServiceInterface looks ``inspect`` up."""
    service = importlib.import_module(
        "dbus_next.service" if BACKEND == "next" else "dbus_fast.service"
    )
    if not isinstance(getattr(service, "inspect", None), _ServiceInspect):
        setattr(service, "inspect", _ServiceInspect(service))  # noqa: B010


_keep_members_per_class()


def marshal_body(signature: str, body: list[Any]) -> bytes:
    """The wire bytes of a message body (little-endian), as the library writes it.

    Raises:
        Exception: whatever the library raises for a body that does not match.
    """
    return bytes(_Marshaller(signature, body).marshall())


class _Wire(tuple[bytes, bytes]):
    """A message as header and body, written one after the other (:class:`_Writer`).

    Joining them would copy the body (megabytes for GetManagedObjects at 1,000
    devices) on every send.
    """

    __slots__ = ()

    def __new__(cls, header: bytes, body: bytes) -> _Wire:
        return super().__new__(cls, (header, body))


class _Writer(_MessageWriter):
    """The library's writer, fixed for a full socket and for fds handed over.

    dbus-next 0.2.3 and dbus-fast 5 treat ``EAGAIN`` from ``send()`` as a fatal error
    and drop the whole connection: with many or large messages queued, the writer moves
    on to the next message after finishing one and finds the socket full. Here a full
    socket just means "wait until writable". File descriptors registered with
    :meth:`LivefwBus.close_after_send` are closed once the kernel has taken them
    (SCM_RIGHTS dups them into the message), so a method can return a descriptor it
    does not keep.

    dbus-next queues messages in an ``asyncio.Queue`` and calls ``write_callback()``;
    dbus-fast queues them in a ``deque`` and calls ``write_callback(remove_writer=False)``
    when it writes at once from ``send()`` (it then registers the writer itself while
    anything is left). Both are handled here.
    """

    #: the body of a :class:`_Wire` whose header is being written
    _tail: bytes | None = None

    def _next_message(self) -> Any:
        messages = self.messages
        if isinstance(messages, collections.deque):
            return messages.popleft() if messages else None
        return messages.get_nowait() if messages.qsize() else None

    def write_callback(self, remove_writer: bool = True) -> None:
        try:
            while True:
                if self.buf is None:
                    queued = self._next_message()
                    if queued is None:
                        if remove_writer:
                            self.loop.remove_writer(self.fd)
                        return
                    buf, unix_fds, fut = queued
                    if type(buf) is _Wire:
                        buf, self._tail = buf
                    self.unix_fds = unix_fds
                    self.buf = memoryview(buf)
                    self.offset = 0
                    self.fut = fut
                try:
                    if self.unix_fds and self.negotiate_unix_fd:
                        ancdata = [
                            (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", self.unix_fds))
                        ]
                        sent = self.sock.sendmsg([self.buf[self.offset :]], ancdata)
                        self.bus._fds_sent(self.unix_fds)
                        self.unix_fds = None
                    else:
                        sent = self.sock.send(self.buf[self.offset :])
                except (BlockingIOError, InterruptedError):
                    return  # the loop calls back when the socket is writable again
                self.offset += sent
                if self.offset >= len(self.buf) and self._tail is not None:
                    self.buf, self.offset, self._tail = memoryview(self._tail), 0, None
                elif self.offset >= len(self.buf):
                    self.buf = None
                    if self.fut is not None and not self.fut.done():
                        self.fut.set_result(None)
                else:
                    return
        except Exception as error:
            if self.fut is not None and not self.fut.done():
                if getattr(self.bus, "_user_disconnect", False):
                    self.fut.set_result(None)  # dbus-fast: a disconnect we asked for
                else:
                    self.fut.set_exception(error)
            self.bus._finalize(error)


class MessageBus(_AioMessageBus):
    """The library's asyncio bus with the fixed writer (clients: the CLI, tests)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if BACKEND == "next":
            self._writer = _Writer(self)  # dbus-fast makes its writer in connect()
        self._owned_fds: set[int] = set()

    async def _authenticate(self) -> None:
        if BACKEND == "fast":
            # dbus-fast has just connected the socket and made its own writer, which
            # nothing has used yet: put the fixed one in its place.
            self._writer = _Writer(self)
        await super()._authenticate()

    def close_after_send(self, fd: int) -> None:
        """Close ``fd`` once a message carrying it has been written to the socket."""
        self._owned_fds.add(fd)

    def _fds_sent(self, fds: list[int]) -> None:
        for fd in fds:
            if fd in self._owned_fds:
                self._owned_fds.discard(fd)
                with contextlib.suppress(OSError):
                    os.close(fd)


async def call(bus: _AioMessageBus, message: Message) -> Message:
    """Send a method call and return the reply (METHOD_RETURN or ERROR).

    Raises:
        ConnectionError: the bus went away before a reply came.
    """
    reply = await bus.call(message)
    if reply is None:
        raise ConnectionError(f"no reply to {message.member}: the bus connection is closed")
    return reply


async def call_bus_driver(
    bus: _AioMessageBus, member: str, signature: str = "", body: list[Any] | None = None
) -> Message:
    """Call a method of the bus itself (``org.freedesktop.DBus``: AddMatch, ...).

    Raises:
        ConnectionError: the bus went away before a reply came.
    """
    return await call(
        bus,
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member=member,
            signature=signature,
            body=body or [],
        ),
    )


def marshal(message: Message, negotiate_unix_fd: bool = False) -> bytes:
    """A message's wire bytes (both libraries; dbus-fast's ``_marshall`` has no default)."""
    wire = message._marshall(negotiate_unix_fd)
    return b"".join(wire) if type(wire) is _Wire else bytes(wire)


def disconnect(bus: _AioMessageBus) -> None:
    """Close a bus connection."""
    bus.disconnect()


async def wait_for_disconnect(bus: _AioMessageBus) -> None:
    """Return when the connection is closed (raises if it closed with an error)."""
    await bus.wait_for_disconnect()
