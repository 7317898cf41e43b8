"""Messages over livefwd's size limits are skipped before the D-Bus library parses them.

Both D-Bus libraries read a whole message into memory and unmarshal all of it, on the
event loop, before livefwd sees it; the system bus lets any local user send messages of
up to 32 MiB (dbus-daemon's ``max_message_size``, /usr/share/dbus-1/system.conf). A
multi-MiB body held the loop for 0.1-0.5 s with dbus-next and left RSS tens of MiB
higher (issue 13). No livefwd method takes more than a few KiB inline (payloads come
as file descriptors), so :class:`BoundedSocket` stands between the bus socket and the
library's unmarshaller:

* it reads each message's fixed header itself (16 bytes: endianness, type, flags,
  version, body length, serial, header-fields array length), and hands messages within
  the limits on unchanged, never letting the unmarshaller read past their end;
* a method call or signal whose body is over ``max_body`` (or whose header-fields array
  is over ``max_header``) is never given to the library: its bytes are read into one
  fixed 64 KiB buffer and dropped, at most :data:`DRAIN_PER_CALL` bytes per call of the
  reader (so the loop runs other work in between), the descriptors that came with it
  are closed, and the small header fields needed to answer it (sender, serial, path,
  interface, member) are picked out as they pass; then ``on_refused`` is told.
* a method may be allowed a bigger body (a :class:`LargeCall`: fwctl's ``Rpc``
  carries its request inline, up to ``[plugins.fwctl] max_request_size``): a call
  whose body is over ``max_body`` but within the biggest such allowance has its
  header fields and the start of its body read and checked first; only a call of
  that interface, member and signature, whose arguments before and after its one
  byte array are small, is handed on. Every other member keeps ``max_body``, so a
  raised allowance raises nothing for them, and what the allowance lets through costs
  the libraries a copy of bytes (an ``ay`` is one slice), not a parse of values.
  Messages within ``max_body`` are never looked at beyond their fixed header.

Both libraries read a socket with ``recvmsg(n, ancbufsize)`` asking for exactly the
bytes up to the end of the current message (dbus-next 0.2.3:
``Unmarshaller.read()``; dbus-fast 5: ``Unmarshaller._read_sock_with_fds``, compiled),
and take fewer bytes than asked, or ``EAGAIN``, to mean "wait until the socket is
readable". So this object returns fewer bytes only after the real socket said
``EAGAIN`` or while refusing a message with more of it still queued (the socket stays
readable, the loop calls again). Replies (method returns and errors) are not limited:
dbus-daemon delivers only replies to calls livefwd made (``send_requested_reply``), to
dbus-daemon, polkit and logind.
"""

from __future__ import annotations

import array
import contextlib
import errno
import os
import socket
import struct
from collections.abc import Callable, Generator, Sequence
from typing import Any

from livefw.record import FACTORY, Frozen, Record

#: the D-Bus specification's message types (``METHOD_CALL`` .. ``SIGNAL``)
METHOD_CALL = 1
SIGNAL = 4
#: the NO_REPLY_EXPECTED flag of the fixed header
NO_REPLY_EXPECTED = 0x1
#: the endianness bytes of the fixed header
LITTLE = ord("l")
BIG = ord("B")
FIXED_HEADER = 16
#: header field codes (D-Bus specification, "Header Fields")
PATH, INTERFACE, MEMBER, ERROR_NAME, REPLY_SERIAL, DESTINATION, SENDER, SIGNATURE, UNIX_FDS = range(
    1, 10
)

#: bytes of a refused message read per recvmsg, into one preallocated buffer
CHUNK = 64 * 1024
#: bytes of refused messages dropped per call of the library's reader before it is
#: told "try again" (the socket stays readable, so the loop comes back at once after
#: running what else is ready): a 32 MiB message takes 32 turns of the loop.
DRAIN_PER_CALL = 1024 * 1024
#: ancillary buffer for 16 fds (dbus-daemon's max_message_unix_fds on the system bus,
#: the libraries' own recvmsg buffer)
_ANCBUF = socket.CMSG_LEN(16 * array.array("i").itemsize)
#: header strings longer than this are skipped, not kept (bus names are at most 255)
_KEEP = 255
#: body bytes a large call's shape is checked from: its leading string (at most
#: _KEEP bytes, its length and NUL), padding, and the byte array's length
LARGE_PREFIX = 4 + _KEEP + 1 + 3 + 4


class LargeCall(Frozen):
    """A method call allowed a body over the connection's ``max_body``.

    Its signature must be a string (at most 255 bytes), then a byte array, then
    arguments of at most ``rest`` bytes on the wire: only the byte array may be
    large, so the library copies the allowance rather than parsing values.

    Attributes:
        interface: the INTERFACE header field the call must carry.
        member: the MEMBER header field.
        signature: the SIGNATURE header field; it must start with ``say``.
        max_body: the largest body allowed.
        rest: the most bytes after the byte array (padding included).
    """

    _FIELDS = ("interface", "member", "signature", "max_body", "rest")
    interface: str
    member: str
    signature: str
    max_body: int
    rest: int

    def __init__(
        self, interface: str, member: str, signature: str, max_body: int, rest: int
    ) -> None:
        _set = object.__setattr__
        _set(self, "interface", interface)
        _set(self, "member", member)
        _set(self, "signature", signature)
        _set(self, "max_body", max_body)
        _set(self, "rest", rest)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not self.signature.startswith("say"):
            raise ValueError(f"a large call's signature starts with 'say': {self.signature!r}")

    def fits(self, big: bool, body_length: int, prefix: bytes) -> bool:
        """Whether a body of ``body_length`` starting with ``prefix`` has this shape."""
        if body_length > self.max_body or len(prefix) < 4:
            return False
        order = ">" if big else "<"
        (text,) = struct.unpack_from(order + "I", prefix)
        if text > _KEEP:
            return False
        position = 4 + text + 1
        position += -position & 3
        if len(prefix) < position + 4:
            return False
        (count,) = struct.unpack_from(order + "I", prefix, position)
        end: int = position + 4 + count
        return end <= body_length and body_length - end <= self.rest


class RefusedMessage(Record):
    """What is known about a message that was skipped: its fixed header and small fields."""

    _FIELDS = (
        "message_type",
        "flags",
        "serial",
        "body_length",
        "header_length",
        "fields",
        "fds",
        "reason",
        "byte_order",
        "limit",
        "detail",
    )
    message_type: int
    flags: int
    serial: int
    body_length: int
    header_length: int
    #: header field code -> value (strings of up to 255 bytes, integers)
    fields: dict[int, Any]
    #: how many fds came with it (all closed)
    fds: int = 0
    #: which limit: "body" or "header"
    reason: str = "body"
    #: the sender's byte order ("little" or "big")
    byte_order: str = "little"
    #: the limit it was over (the body or header limit that applied to its member)
    limit: int = 0
    #: for a large call's member that was refused within its own limit: why
    detail: str = ""

    def __init__(
        self,
        message_type: int,
        flags: int,
        serial: int,
        body_length: int,
        header_length: int,
        fields: dict[int, Any] = FACTORY,
        fds: int = 0,
        reason: str = "body",
        byte_order: str = "little",
        limit: int = 0,
        detail: str = "",
    ) -> None:
        self.message_type = message_type
        self.flags = flags
        self.serial = serial
        self.body_length = body_length
        self.header_length = header_length
        self.fields = dict() if fields is FACTORY else fields
        self.fds = fds
        self.reason = reason
        self.byte_order = byte_order
        self.limit = limit
        self.detail = detail

    @property
    def sender(self) -> str | None:
        value = self.fields.get(SENDER)
        return value if isinstance(value, str) else None

    def text(self, field_code: int) -> str | None:
        value = self.fields.get(field_code)
        return value if isinstance(value, str) else None

    @property
    def wants_reply(self) -> bool:
        return self.message_type == METHOD_CALL and not self.flags & NO_REPLY_EXPECTED


def _header_fields(
    big: bool, header_length: int, fields: dict[int, Any]
) -> Generator[int, bytes, None]:
    """Pick the small fields out of a header-fields array into ``fields``, piece by piece.

    Yields how many bytes it needs next (a negative number: bytes to skip) and is sent
    them. Strings over 255 bytes (only an object path can be) are skipped and recorded
    as their length; a field of a type no header field has ends the scan (the fields
    found so far are kept).
    """
    order = ">" if big else "<"
    position = FIXED_HEADER
    end = FIXED_HEADER + header_length
    while position < end:
        pad = -position & 7  # each field is a struct: 8-aligned
        if pad:
            yield -pad
            position += pad
        code = (yield 1)[0]
        signature_length = (yield 1)[0]
        signature = (yield signature_length + 1)[:signature_length]
        position += 3 + signature_length
        value: Any
        if signature in (b"s", b"o", b"u"):
            pad = -position & 3
            if pad:
                yield -pad
                position += pad
            (number,) = struct.unpack(order + "I", (yield 4))
            position += 4
            if signature == b"u":
                value = number
            elif number <= _KEEP:
                value = (yield number + 1)[:number].decode("utf-8", "replace")
                position += number + 1
            else:
                yield -(number + 1)
                position += number + 1
                value = number  # too long to keep: its length
        elif signature == b"g":
            length = (yield 1)[0]
            value = (yield length + 1)[:length].decode("ascii", "replace")
            position += length + 2
        else:
            return
        fields[code] = value


class _FieldScan:
    """Feeds the bytes after a refused message's fixed header to :func:`_header_fields`."""

    def __init__(self, big: bool, header_length: int) -> None:
        self.left = header_length
        self.fields: dict[int, Any] = {}
        self.done = header_length == 0
        self._parser = _header_fields(big, header_length, self.fields)
        self._pending = bytearray()
        self._need = 0
        if not self.done:
            self._advance(None)

    def _advance(self, data: bytes | None) -> None:
        try:
            self._need = next(self._parser) if data is None else self._parser.send(data)
        except StopIteration:
            self.done = True

    def feed(self, chunk: memoryview) -> None:
        if self.done:
            return
        chunk = chunk[: self.left]
        self.left -= len(chunk)
        index = 0
        while not self.done and index < len(chunk):
            if self._need < 0:
                take = min(-self._need, len(chunk) - index)
                index += take
                self._need += take
                if self._need == 0:
                    self._advance(b"")
                continue
            take = min(self._need - len(self._pending), len(chunk) - index)
            self._pending += chunk[index : index + take]
            index += take
            if len(self._pending) == self._need:
                data = bytes(self._pending)
                self._pending.clear()
                self._advance(data)
        if self.left == 0 and not self.done:
            # the array ended inside a field (a malformed message): keep what was found
            self._parser.close()
            self.done = True


def _close_fds(ancdata: list[tuple[int, int, bytes]]) -> int:
    """Close every fd in ``ancdata`` (SCM_RIGHTS); how many there were."""
    count = 0
    for level, kind, data in ancdata:
        if level != socket.SOL_SOCKET or kind != socket.SCM_RIGHTS:
            continue
        fds = array.array("i")
        fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        for fd in fds:
            count += 1
            with contextlib.suppress(OSError):
                os.close(fd)
    return count


def _would_block() -> BlockingIOError:
    return BlockingIOError(errno.EAGAIN, "livefw: more of a refused message later")


class BoundedSocket:
    """The bus socket as the library's unmarshaller sees it: oversized messages skipped.

    Everything but ``recvmsg``/``recv`` is the socket's own (``__getattr__``), so the
    library may keep using this object wherever it used the socket.

    Args:
        sock: the connected, authenticated bus socket.
        max_body: largest body of a method call or signal handed to the library.
        max_header: largest header-fields array of a method call or signal.
        on_refused: told about each skipped message once all of it has been read.
        large_calls: method calls allowed a bigger body than ``max_body``.
    """

    def __init__(
        self,
        sock: socket.socket,
        max_body: int,
        max_header: int,
        on_refused: Callable[[RefusedMessage], None],
        large_calls: Sequence[LargeCall] = (),
    ) -> None:
        self._sock = sock
        self.max_body = max_body
        self.max_header = max_header
        self._on_refused = on_refused
        self._large = {(call.interface, call.member): call for call in large_calls}
        #: the biggest body any large call may have (0: none may be over max_body)
        self._large_limit = max((call.max_body for call in large_calls), default=0)
        #: a call over max_body but within _large_limit, while its header fields and
        #: body start are read: (fixed header, bytes still to read)
        self._peek: tuple[bytes, int] | None = None
        #: what reads the next bytes of a message's start: _read_fixed, or _read_peek
        #: while a maybe-large call is looked at (so messages within the limits pay
        #: no check for it)
        self._read_next: Callable[[], bool] = self._read_fixed
        self._peeked = bytearray()
        self._peek_anc: list[tuple[int, int, bytes]] = []
        #: fixed header of the next message, while it is being read
        self._fixed = bytearray()
        self._fixed_anc: list[tuple[int, int, bytes]] = []
        #: bytes already read that belong to the library (a passed message's start)
        self._handout = b""
        self._handout_anc: list[tuple[int, int, bytes]] = []
        #: bytes of the current passed message still on the socket
        self._remaining = 0
        #: bytes of the current refused message still on the socket
        self._skipping = 0
        self._refused: RefusedMessage | None = None
        self._scan: _FieldScan | None = None
        self._chunk = bytearray(CHUNK)
        #: bytes given to the library and bytes dropped (tests, and the log)
        self.passed_bytes = 0
        self.refused_bytes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """``recvmsg`` without ancillary data (fds that come anyway are closed)."""
        data, ancdata, _flags, _address = self.recvmsg(bufsize, _ANCBUF, flags)
        _close_fds(ancdata)
        return bytes(data)

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0) -> Any:
        """What ``socket.recvmsg`` returns, minus the messages over the limits."""
        budget = DRAIN_PER_CALL
        while True:
            if self._handout:
                return self._serve(bufsize, ancbufsize)
            if self._remaining:
                data, ancdata, msg_flags, address = self._sock.recvmsg(
                    min(bufsize, self._remaining), max(ancbufsize, _ANCBUF)
                )
                self._remaining -= len(data)
                self.passed_bytes += len(data)
                return data, ancdata, msg_flags, address
            if self._skipping:
                left = self._skip(budget)
                if left is None:
                    return b"", [], 0, None  # end of file inside a refused message
                if self._skipping:
                    raise _would_block()  # budget spent: the loop comes back
                budget = left
                continue
            if not self._read_next():
                return b"", [], 0, None

    # ------------------------------------------------------------ internals

    def _read_fixed(self) -> bool:
        """Read the next fixed header and decide; False: end of file."""
        while len(self._fixed) < FIXED_HEADER:
            data, ancdata, _flags, _address = self._sock.recvmsg(
                FIXED_HEADER - len(self._fixed), _ANCBUF
            )  # BlockingIOError: the library waits for the socket
            self._fixed_anc.extend(ancdata)
            if not data:
                _close_fds(self._fixed_anc)
                self._fixed_anc = []
                return False
            self._fixed += data
        fixed, self._fixed = bytes(self._fixed), bytearray()
        ancdata, self._fixed_anc = self._fixed_anc, []
        endian, kind, version = fixed[0], fixed[1], fixed[3]
        if endian not in (LITTLE, BIG) or version != 1:
            # not a message the library can read: it says so and drops the connection
            self._pass(fixed, ancdata, 0)
            return True
        body_length, _serial, header_length = struct.unpack_from(
            (">" if endian == BIG else "<") + "III", fixed, 4
        )
        rest = header_length + (-header_length & 7) + body_length
        reason = None
        if kind in (METHOD_CALL, SIGNAL):
            if body_length > self.max_body:
                if (
                    body_length <= self._large_limit
                    and kind == METHOD_CALL
                    and header_length <= self.max_header
                ):
                    # maybe a large call: its header fields and body start decide
                    self._peek = (fixed, rest - body_length + min(body_length, LARGE_PREFIX))
                    self._peek_anc = ancdata
                    self._read_next = self._read_peek
                    return True
                reason = "body"
            elif header_length > self.max_header:
                reason = "header"
        if reason is None:
            self._pass(fixed, ancdata, rest)
            return True
        self._refuse(fixed, ancdata, reason, _FieldScan(endian == BIG, header_length), rest)
        return True

    def _read_peek(self) -> bool:
        """Read a maybe-large call's header fields and body start, then decide.

        False: end of file. Raises BlockingIOError while bytes are still to come.
        """
        if self._peek is None:  # cannot happen: set together with _read_next
            self._read_next = self._read_fixed
            return True
        fixed, want = self._peek
        while len(self._peeked) < want:
            data, ancdata, _flags, _address = self._sock.recvmsg(
                want - len(self._peeked), _ANCBUF
            )  # BlockingIOError: the library waits for the socket
            self._peek_anc.extend(ancdata)
            if not data:
                self._peek = None
                self._read_next = self._read_fixed
                self._peeked = bytearray()
                _close_fds(self._peek_anc)
                self._peek_anc = []
                return False
            self._peeked += data
        peeked, self._peeked, self._peek = bytes(self._peeked), bytearray(), None
        self._read_next = self._read_fixed
        ancdata, self._peek_anc = self._peek_anc, []
        big = fixed[0] == BIG
        body_length, _serial, header_length = struct.unpack_from(
            (">" if big else "<") + "III", fixed, 4
        )
        scan = _FieldScan(big, header_length)
        scan.feed(memoryview(peeked))
        body_start = header_length + (-header_length & 7)
        rest = body_start + body_length - len(peeked)
        call = self._large.get((str(scan.fields.get(INTERFACE)), str(scan.fields.get(MEMBER))))
        if (
            call is not None
            and scan.fields.get(SIGNATURE) == call.signature
            and call.fits(big, body_length, peeked[body_start:])
        ):
            self._pass(fixed + peeked, ancdata, rest)
        else:
            self._refuse(fixed, ancdata, "body", scan, rest)
            self.refused_bytes += len(peeked)
        return True

    def _refuse(
        self,
        fixed: bytes,
        ancdata: list[tuple[int, int, bytes]],
        reason: str,
        scan: _FieldScan,
        rest: int,
    ) -> None:
        """Skip the ``rest`` bytes of the message ``fixed`` starts (its fds closed)."""
        endian, kind, flags = fixed[0], fixed[1], fixed[2]
        body_length, serial, header_length = struct.unpack_from(
            (">" if endian == BIG else "<") + "III", fixed, 4
        )
        self._refused = RefusedMessage(
            message_type=kind,
            flags=flags,
            serial=serial,
            body_length=body_length,
            header_length=header_length,
            fds=_close_fds(ancdata),
            reason=reason,
            byte_order="big" if endian == BIG else "little",
        )
        self._scan = scan
        self._skipping = rest
        self.refused_bytes += FIXED_HEADER
        if not rest:
            self._finish()

    def _pass(self, fixed: bytes, ancdata: list[tuple[int, int, bytes]], rest: int) -> None:
        self._handout = fixed
        self._handout_anc = ancdata
        self._remaining = rest

    def _serve(self, bufsize: int, ancbufsize: int) -> Any:
        """Bytes already read for the library, topped up from the socket if it asked more."""
        data, self._handout = self._handout[:bufsize], self._handout[bufsize:]
        ancdata, self._handout_anc = self._handout_anc, []
        self.passed_bytes += len(data)
        if len(data) < bufsize and self._remaining and not self._handout:
            try:
                more, more_anc, _flags, _address = self._sock.recvmsg(
                    min(bufsize - len(data), self._remaining), max(ancbufsize, _ANCBUF)
                )
            except (BlockingIOError, InterruptedError):
                more, more_anc = b"", []
            if more:
                self._remaining -= len(more)
                self.passed_bytes += len(more)
                data += more
            ancdata = ancdata + list(more_anc)
        return data, ancdata, 0, None

    def _skip(self, budget: int) -> int | None:
        """Drop bytes of the refused message; the budget left, None at end of file.

        Raises BlockingIOError when the socket has nothing more for now.
        """
        view = memoryview(self._chunk)
        refused, scan = self._refused, self._scan
        if refused is None or scan is None:  # cannot happen: skipping starts with both
            self._skipping = 0
            return budget
        while self._skipping and budget > 0:
            want = min(CHUNK, self._skipping, budget)
            count, ancdata, _flags, _address = self._sock.recvmsg_into([view[:want]], _ANCBUF)
            if ancdata:
                refused.fds += _close_fds(ancdata)
            if not count:
                self._skipping = 0
                self._refused = self._scan = None
                return None
            scan.feed(view[:count])
            self._skipping -= count
            self.refused_bytes += count
            budget -= count
        if not self._skipping:
            self._finish()
        return budget

    def _finish(self) -> None:
        refused, scan = self._refused, self._scan
        self._refused = self._scan = None
        self._skipping = 0
        if refused is None:
            return
        if scan is not None:
            refused.fields = scan.fields
        self._set_limit(refused)
        self._on_refused(refused)

    def _set_limit(self, refused: RefusedMessage) -> None:
        """Which limit a refused message was over: a large call's own, if it is one."""
        if refused.reason == "header":
            refused.limit = self.max_header
            return
        refused.limit = self.max_body
        call = self._large.get((str(refused.text(INTERFACE)), str(refused.text(MEMBER))))
        if call is None or refused.fields.get(SIGNATURE) != call.signature:
            return
        if refused.body_length > call.max_body:
            refused.limit = call.max_body
        elif refused.message_type == METHOD_CALL:
            refused.detail = (
                f"only the {call.signature[1:3]} argument of {call.interface}.{call.member} "
                f"may be bigger (up to {call.max_body} bytes in all); the others together "
                f"at most {call.rest} bytes"
            )
