"""A D-Bus client without a D-Bus library: hand-built messages, either byte order.

``python raw_client.py ADDRESS PLAN`` connects (SASL EXTERNAL, Unix fds negotiated),
says Hello, then sends every message of ``PLAN`` (JSON: a list of
:func:`livefw.testing.raw_message` keyword arguments, plus ``text_size``: a string
body of that many bytes, and ``send_fds``: how many descriptors of /dev/null go with
it) back to back without waiting, serials 2, 3, ...; then reads until every method
call that expects a reply has one and prints ``{serial: "ok" | "error.name: text"}``
as one JSON line. The libraries marshal little-endian only and wait for each reply;
this is how a test sends big-endian messages and interleaves them. Run as ``nobody``
by tests/robust/test_bus_limits.py.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
import sys
from typing import Any

from livefw.bus.framing import ERROR_NAME, REPLY_SERIAL, _FieldScan
from livefw.testing import raw_message

NO_REPLY_EXPECTED = 1


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError("the bus closed the connection")
        data += chunk
    return bytes(data)


def _line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        data += _exactly(sock, 1)
    return data[:-2]


def read_message(sock: socket.socket) -> tuple[int, dict[int, Any], str | None]:
    """(type, header fields, the body's string or None) of the next message."""
    fixed = _exactly(sock, 16)
    big = fixed[0] == ord("B")
    body_length, _serial, header_length = struct.unpack_from(
        (">" if big else "<") + "III", fixed, 4
    )
    rest = _exactly(sock, header_length + (-header_length & 7) + body_length)
    scan = _FieldScan(big, header_length)
    scan.feed(memoryview(rest))
    body = rest[header_length + (-header_length & 7) :]
    text = None
    if len(body) >= 4:
        (length,) = struct.unpack_from((">" if big else "<") + "I", body)
        if length + 5 <= len(body):
            text = body[4 : 4 + length].decode(errors="replace")
    return fixed[1], scan.fields, text


def connect(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address.removeprefix("unix:path="))
    sock.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
    assert _line(sock).startswith(b"OK "), "authentication refused"
    sock.sendall(b"NEGOTIATE_UNIX_FD\r\n")
    assert _line(sock) == b"AGREE_UNIX_FD", "the bus does not pass fds"
    sock.sendall(b"BEGIN\r\n")
    sock.sendall(
        raw_message(
            serial=1,
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="Hello",
            destination="org.freedesktop.DBus",
        )
    )
    while True:
        kind, fields, _text = read_message(sock)
        if kind in (2, 3) and fields.get(REPLY_SERIAL) == 1:
            return sock


def main(address: str, plan: list[dict[str, Any]]) -> None:
    sock = connect(address)
    waiting: set[int] = set()
    for serial, entry in enumerate(plan, start=2):
        entry = dict(entry)
        size = entry.pop("text_size", None)
        if size is not None:
            entry["text"] = "x" * size
        count = entry.pop("send_fds", 0)
        data = raw_message(serial=serial, fds=count, **entry)
        if entry.get("kind", 1) == 1 and not entry.get("flags", 0) & NO_REPLY_EXPECTED:
            waiting.add(serial)
        fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(count)]
        try:
            if fds:
                rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                sent = sock.sendmsg([data], rights)
                sock.sendall(data[sent:])
            else:
                sock.sendall(data)
        finally:
            for fd in fds:
                os.close(fd)
    sock.settimeout(120)
    replies: dict[int, str] = {}
    while waiting - set(replies):
        kind, fields, text = read_message(sock)
        serial = fields.get(REPLY_SERIAL)
        if kind == 2 and serial in waiting:
            replies[serial] = "ok"
        elif kind == 3 and serial in waiting:
            replies[serial] = f"{fields.get(ERROR_NAME)}: {text}"
    sock.close()
    print(json.dumps({str(serial): replies[serial] for serial in sorted(replies)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
