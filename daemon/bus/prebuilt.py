"""Reply bodies marshalled ahead and kept ("kept bytes"): GetManagedObjects, fwupd's GetDevices.

A method returns a :class:`Prebuilt` instead of its value;
:meth:`livefw.bus.backend.LivefwBus.send` writes its bytes as the reply's body
(:func:`_prebuilt_message`). :class:`ArrayReply` and :class:`ArrayElement` keep the
bytes of an ``aa...`` reply per element (fwupd's GetDevices, livefw.bus.compat);
:func:`dict_entry` and :func:`dict_body` build an ``a{...}`` one per entry
(GetManagedObjects, :meth:`livefw.bus.backend.LivefwBus._managed_objects_body`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from livefw import memory
from livefw.bus.dbuslib import Message, Variant, _Wire, marshal_body

__all__ = [
    "MANAGED_OBJECT",
    "MANAGED_OBJECTS",
    "MAX_ARRAY_BYTES",
    "ArrayElement",
    "ArrayReply",
    "Part",
    "Prebuilt",
    "array_body",
    "built",
    "dict_body",
    "dict_entry",
]

# ---------------------------------------------------------------- prebuilt bodies
#
# A large reply that rarely changes (GetManagedObjects, fwupd's GetDevices) is sent
# from bytes marshalled ahead: each object's or device's part is marshalled once and
# kept until it changes, and a call only joins the parts and writes a header. The
# libraries marshal the whole tree on every call (bench/NOTES.md, issue 17: 23 ms of
# daemon CPU per GetManagedObjects at 1,000 devices, most of it the marshaller and
# the scan of every variant for file descriptors).

#: D-Bus arrays hold at most 2**26 bytes (the specification's "Valid Signatures").
MAX_ARRAY_BYTES = 1 << 26
#: GetManagedObjects' reply and one entry of it
MANAGED_OBJECTS = "a{oa{sa{sv}}}"
MANAGED_OBJECT = "{oa{sa{sv}}}"
_ZEROS = bytes(8)
_UINT32 = struct.Struct("<I")


class Prebuilt:
    """A method's single return value, already marshalled (``data``: bytes).

    A method returns it instead of the value (its out signature must be
    ``signature``); :meth:`LivefwBus.send` writes ``data`` as the reply's body.
    ``data`` must be what :func:`marshal_body` gives for ``signature``: build it
    with :class:`ArrayReply` or :func:`marshal_body`, never by hand.
    """

    __slots__ = ("data", "signature")

    def __init__(self, signature: str, data: bytes) -> None:
        if "h" in signature:
            raise ValueError("a prebuilt body cannot carry file descriptors")
        self.signature = signature
        self.data = data


class _PrebuiltMessage(Message):
    """A message whose body is a :class:`Prebuilt`: the header is marshalled per send.

    Both libraries' writers call ``msg._marshall()`` from Python, so this override is
    what they send (dbus-fast's Message is a compiled class that allows subclasses).
    """

    __slots__ = ("prebuilt",)
    prebuilt: Prebuilt

    def _marshall(self, negotiate_unix_fd: bool = False) -> _Wire:
        data = self.prebuilt.data
        fields: list[list[Any]] = []
        if self.path:
            fields.append([1, Variant("o", self.path)])
        if self.interface:
            fields.append([2, Variant("s", self.interface)])
        if self.member:
            fields.append([3, Variant("s", self.member)])
        if self.error_name:
            fields.append([4, Variant("s", self.error_name)])
        if self.reply_serial:
            fields.append([5, Variant("u", self.reply_serial)])
        if self.destination:
            fields.append([6, Variant("s", self.destination)])
        fields.append([8, Variant("g", self.signature)])
        header = marshal_body(
            "yyyyuua(yv)",
            [
                ord("l"),
                self.message_type.value,
                self.flags.value,
                1,  # protocol version
                len(data),
                self.serial,
                fields,
            ],
        )
        return _Wire(header + _ZEROS[: -len(header) & 7], data)


def _prebuilt_message(msg: Message, prebuilt: Prebuilt) -> Message:
    if prebuilt.signature != msg.signature:
        raise ValueError(
            f"a prebuilt body of {prebuilt.signature!r} in a reply of {msg.signature!r}"
        )
    copy = _PrebuiltMessage(
        destination=msg.destination,
        path=msg.path,
        interface=msg.interface,
        member=msg.member,
        message_type=msg.message_type,
        flags=msg.flags,
        error_name=msg.error_name,
        reply_serial=msg.reply_serial,
        signature=msg.signature,
        body=[],
        serial=msg.serial,
    )
    copy.prebuilt = prebuilt
    return copy


#: a part of a body: bytes, or a view of a kept body (see :func:`views`)
Part = bytes | memoryview


class ArrayElement:
    """One element of an array of arrays or dicts (``a{sv}`` in ``aa{sv}``), marshalled once.

    An array's bytes depend on where it starts modulo 8: an array of 8-aligned
    entries (dicts, structs, ``t``, ``x``, ``d``) has 4 bytes of padding between its
    length and its first entry when it starts at 0 modulo 8, none at 4; the entries
    themselves are the same bytes either way. So the element keeps one form only,
    for the place it was last joined at (a view of the body it was joined into,
    :meth:`place`), and the other is that form with the padding taken out or put
    in. The value is marshalled on the first :meth:`at` and then let go: the bytes
    stand for it (at 1,000 devices the fwupd device dicts, a Variant per property,
    were ~2 MiB next to 0.6 MB of their bytes; bench/NOTES.md, issue 17).
    """

    __slots__ = ("_aligned", "_pad", "_part", "signature", "value")

    def __init__(self, signature: str, value: Any) -> None:
        if signature[:1] != "a":
            raise ValueError(f"{signature!r} is not an array type")
        self.signature = signature
        #: the value until it is marshalled (None after)
        self.value: Any = value
        #: padding after the length at 0 modulo 8: 4 for 8-aligned entries, else 0
        self._pad = 4 if signature[1:2] in ("{", "(", "t", "x", "d") else 0
        self._part: Part | None = None
        self._aligned = True  # whether _part is the form at 0 modulo 8

    def at(self, offset: int) -> Part:
        """The element's bytes when it starts at ``offset`` of the body (4-aligned)."""
        aligned = not offset & 7
        part = self._part
        if part is None:
            part = marshal_body(self.signature, [self.value])  # the form at 0 modulo 8
            self._part, self._aligned, self.value = part, True, None
        if aligned == self._aligned or not self._pad:
            return part
        if aligned:  # padding put in after the length
            return b"".join((part[:4], _ZEROS[: self._pad], part[4:]))
        return b"".join((part[:4], part[4 + self._pad :]))  # padding taken out

    def place(self, offset: int, view: memoryview) -> None:
        """Keep ``view`` (of a kept body) as the bytes at ``offset``; forget the others.

        Only one body is pinned per element: views of an older one go.
        """
        self._part, self._aligned, self.value = view, not offset & 7, None


def dict_entry(signature: str, key: Any, value: Any) -> bytes:
    """One entry of an ``a{...}`` (``signature`` like ``{oa{sv}}``) at an 8-aligned offset."""
    # the array's length and the padding to the entry's 8-byte alignment come first
    return marshal_body("a" + signature, [{key: value}])[8:]


def dict_body(entries: Iterable[Part], starts: list[int] | None = None) -> bytes:
    """The body of one ``a{...}`` argument whose entries come from :func:`dict_entry`.

    ``starts``, when given, receives where each entry begins in the body. Entries
    may come from a generator: each is copied in as it comes, so freshly marshalled
    ones need not all be alive at once.
    """
    buf = bytearray(8)  # the array's length, then padding to the first entry
    for entry in entries:
        buf += _ZEROS[: -len(buf) & 7]  # entries start 8-aligned
        if starts is not None:
            starts.append(len(buf))
        buf += entry
    return _finish_array(buf, len(buf) - 8)


def array_body(elements: Sequence[ArrayElement], keep: bool = False) -> bytes:
    """The body of one ``aa...`` argument made of :class:`ArrayElement` s.

    ``keep``: the caller keeps the body, so each element's bytes become a view of it.
    """
    buf = bytearray(4)  # the array's length; elements are 4-aligned
    placed: list[tuple[int, int]] = []
    for element in elements:
        buf += _ZEROS[: -len(buf) & 3]
        data = element.at(len(buf))  # freshly marshalled ones are dropped once copied
        placed.append((len(buf), len(data)))
        buf += data
    body = _finish_array(buf, len(buf) - 4)
    if keep:
        whole = memoryview(body)
        for element, (start, size) in zip(elements, placed, strict=True):
            element.place(start, whole[start : start + size])
    return body


def built(data: bytes) -> None:
    """A kept body was just built: after a large one, free pages go back to the kernel.

    Building it allocated and freed several times its size (:mod:`livefw.memory`).
    """
    if len(data) >= memory.TRIM_AFTER_BYTES:
        memory.trim()


def _finish_array(buf: bytearray, length: int) -> bytes:
    if length > MAX_ARRAY_BYTES:
        raise ValueError(f"an array of {length} bytes is over D-Bus's {MAX_ARRAY_BYTES}")
    _UINT32.pack_into(buf, 0, length)
    return bytes(buf)


class ArrayReply:
    """A reply of one ``aa...`` argument from per-item :class:`ArrayElement` s.

    The body of the last call is kept: when the same element objects come in the
    same order (nothing changed), it is reused whole.
    """

    def __init__(self, signature: str) -> None:
        self.signature = signature
        self._elements: list[ArrayElement] = []
        self._body: Prebuilt | None = None
        self._items: object = None

    def reply_for(self, items: Sequence[Any], element: Callable[[Any], ArrayElement]) -> Prebuilt:
        """The body for ``element(item)`` of each item, reused whole for the same ``items``.

        For an owner that hands out a new ``items`` object on every change (kept
        here, so its identity cannot be reused by another object).
        """
        if items is not self._items or self._body is None:
            body = self.reply([element(item) for item in items])
            self._items = items
            return body
        return self._body

    def reply(self, elements: list[ArrayElement]) -> Prebuilt:
        """The body for ``elements`` (all of this reply's element type)."""
        last = self._elements
        body = self._body
        if (
            body is None
            or len(last) != len(elements)
            or any(a is not b for a, b in zip(last, elements, strict=True))
        ):
            body = self._body = Prebuilt(self.signature, array_body(elements, keep=True))
            self._elements = elements
            built(body.data)
        return body
