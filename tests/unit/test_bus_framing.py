"""The bus socket guard (livefw.bus.framing): oversized messages never reach the library.

A byte stream of hand-built D-Bus messages (both endiannesses, with and without fds,
big and small interleaved) goes through a socketpair into :class:`BoundedSocket`,
read by each library's own unmarshaller the way its reader does it (dbus-fast: its
compiled ``build_message_reader``; dbus-next: a new Unmarshaller per message, as
``MessageBus._message_reader``). The small messages must come out whole and in order,
the big ones must be reported with their sender, serial and member, their fds closed,
and (the structural proof) the unmarshaller must never be handed a byte of them.
"""

from __future__ import annotations

import array
import gc
import importlib
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from livefw import testing
from livefw.bus.framing import (
    DRAIN_PER_CALL,
    MEMBER,
    NO_REPLY_EXPECTED,
    SIGNAL,
    BoundedSocket,
    LargeCall,
    RefusedMessage,
)

REPO = Path(__file__).resolve().parents[2]
MAX_BODY = 4096
MAX_HEADER = 1024
SENDER = ":1.42"


def raw_message(
    *, big: bool = False, sender: str | None = SENDER, sender_last: bool = True, **kwargs: Any
) -> bytes:
    """livefw.testing.raw_message with this test's sender."""
    return testing.raw_message(
        big_endian=big, sender=sender, sender_first=not sender_last, **kwargs
    )


@dataclass
class Sent:
    data: bytes
    fds: int = 0
    refused: bool = False
    #: the first this many bytes go one at a time, the reader running in between
    trickle: int = 0


@dataclass
class Run:
    messages: list[Any] = field(default_factory=list)
    refused: list[RefusedMessage] = field(default_factory=list)
    #: bytes the guard consumed from refused messages in each call of the reader
    drained_per_call: list[int] = field(default_factory=list)
    guard: BoundedSocket | None = None


def _reader(backend: str, guard: BoundedSocket, process: Callable[[Any], None]) -> Any:
    """The library's own way of reading messages from a socket."""
    if backend == "fast":
        reader = importlib.import_module("dbus_fast.aio.message_reader")
        errors: list[Exception] = []
        return reader.build_message_reader(guard, process, errors.append, True), errors
    module = importlib.import_module("dbus_next._private.unmarshaller")
    state = {"unmarshaller": module.Unmarshaller(None, guard)}
    errors = []

    def read() -> None:  # dbus_next.aio.MessageBus._message_reader
        try:
            while True:
                if state["unmarshaller"].unmarshall():
                    process(state["unmarshaller"].message)
                    state["unmarshaller"] = module.Unmarshaller(None, guard)
                else:
                    break
        except Exception as error:
            errors.append(error)

    return read, errors


def run_stream(backend: str, sent: list[Sent], large: tuple[LargeCall, ...] = ()) -> Run:
    """Send ``sent`` from one end of a socketpair, read it through the guard."""
    pytest.importorskip("dbus_fast" if backend == "fast" else "dbus_next")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    run = Run()
    guard = BoundedSocket(ours, MAX_BODY, MAX_HEADER, run.refused.append, large)
    run.guard = guard
    read, errors = _reader(backend, guard, run.messages.append)
    expected = sum(1 for item in sent if not item.refused)

    def send() -> None:
        for item in sent:
            fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(item.fds)]
            try:
                done = 0
                if fds:
                    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    first = item.data[:1] if item.trickle else item.data
                    done = theirs.sendmsg([first], ancillary)
                while done < item.trickle:
                    time.sleep(0.001)  # the reader sees a partial message
                    done += theirs.send(item.data[done : done + 1])
                theirs.sendall(item.data[done:])
            finally:
                for fd in fds:
                    os.close(fd)

    writer = threading.Thread(target=send)
    writer.start()
    try:
        refusals = sum(1 for item in sent if item.refused)
        while len(run.messages) < expected or len(run.refused) < refusals:
            ready, _, _ = select.select([ours], [], [], 10)
            assert ready, f"stalled: {len(run.messages)} messages, {len(run.refused)} refused"
            before = guard.refused_bytes
            read()
            run.drained_per_call.append(guard.refused_bytes - before)
            assert not errors, errors
    finally:
        writer.join()
        theirs.close()
        ours.close()
    return run


def _open_fds() -> int:
    """Open fds of this process once garbage is collected.

    Earlier tests' unreachable sockets (connections in reference cycles) would otherwise
    be closed by a collection in the middle of a test and make the count drop.
    """
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


BACKENDS = ["next", "fast"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_big_and_small_messages_interleaved_keep_the_framing(backend: str) -> None:
    sent = [
        Sent(raw_message(serial=1, text="first")),
        Sent(raw_message(serial=2, blob=MAX_BODY + 1, member="SetHints"), refused=True),
        Sent(raw_message(serial=3, big=True, text="big-endian")),
        Sent(raw_message(serial=4, big=True, blob=300_000, member="Rpc"), fds=5, refused=True),
        Sent(raw_message(serial=5, text="with fds", fds=3), fds=3),
        Sent(raw_message(serial=6, kind=SIGNAL, blob=2 * 1024 * 1024, member="Boo"), refused=True),
        Sent(raw_message(serial=7, blob=MAX_BODY - 4)),  # a body of exactly the limit
        Sent(
            raw_message(serial=8, flags=NO_REPLY_EXPECTED, blob=100_000, member="NoReply"),
            fds=16,
            refused=True,
        ),
        Sent(raw_message(serial=9, big=True, text="last")),
    ]
    before = _open_fds()
    run = run_stream(backend, sent)
    assert [m.serial for m in run.messages] == [1, 3, 5, 7, 9]
    assert [m.body for m in run.messages[:3]] == [["first"], ["big-endian"], ["with fds"]]
    assert len(run.messages[2].unix_fds) == 3  # the fds of a passed message reach it
    assert bytes(run.messages[3].body[0]) == b"\x5a" * (MAX_BODY - 4)
    # (dbus-fast gives messages without fds the list the next message's fds go to)
    for fd in {fd for message in run.messages for fd in message.unix_fds}:
        os.close(fd)
    refused = {r.serial: r for r in run.refused}
    assert sorted(refused) == [2, 4, 6, 8]
    assert refused[2].sender == SENDER
    assert refused[2].wants_reply
    assert refused[2].fields[MEMBER] == "SetHints"
    assert refused[4].fields[MEMBER] == "Rpc"
    assert refused[4].fds == 5
    assert refused[4].body_length == 300_004
    assert refused[6].message_type == SIGNAL
    assert not refused[6].wants_reply
    assert not refused[8].wants_reply
    assert refused[8].fds == 16
    # every fd of a refused message was closed
    assert _open_fds() == before
    # the structural proof: the unmarshaller got the small messages' bytes only
    assert run.guard is not None
    small = sum(len(item.data) for item in sent if not item.refused)
    assert run.guard.passed_bytes == small
    assert run.guard.refused_bytes == sum(len(item.data) for item in sent if item.refused)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refused_message_is_drained_a_bounded_piece_per_call(backend: str) -> None:
    """6 MiB are dropped over several calls of the reader, never more than the budget."""
    sent = [
        Sent(raw_message(serial=1, blob=6 * 1024 * 1024), refused=True),
        Sent(raw_message(serial=2, text="after")),
    ]
    run = run_stream(backend, sent)
    assert [m.body for m in run.messages] == [["after"]]
    assert max(run.drained_per_call) <= DRAIN_PER_CALL + 16
    assert sum(1 for count in run.drained_per_call if count) >= 6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sender_last", [True, False])
def test_a_long_header_is_refused_and_its_sender_still_found(
    backend: str, sender_last: bool
) -> None:
    """A 20 KiB object path: over MAX_HEADER; the path is skipped, not kept."""
    path = "/a" * 10_000
    sent = [
        Sent(
            raw_message(serial=7, path=path, text="x", sender_last=sender_last, big=sender_last),
            refused=True,
        ),
        Sent(raw_message(serial=8, text="next")),
    ]
    run = run_stream(backend, sent)
    (refused,) = run.refused
    assert refused.reason == "header"
    assert refused.sender == SENDER
    assert refused.serial == 7
    assert refused.fields[1] == len(path)  # the path's length, not the path
    assert [m.serial for m in run.messages] == [8]


@pytest.mark.parametrize("backend", BACKENDS)
def test_replies_are_not_limited(backend: str) -> None:
    """Replies come only for calls livefwd made (dbus-daemon): they pass, any size."""
    sent = [
        Sent(raw_message(serial=3, kind=2, blob=MAX_BODY * 4, sender=":1.1", reply_serial=1)),
        Sent(
            raw_message(
                serial=4,
                kind=3,
                blob=MAX_BODY * 4,
                sender=":1.1",
                reply_serial=2,
                error_name="org.example.Error.Big",
            )
        ),
    ]
    run = run_stream(backend, sent)
    assert [m.serial for m in run.messages] == [3, 4]
    assert not run.refused


@pytest.mark.parametrize("backend", BACKENDS)
def test_end_of_file_inside_a_refused_message(backend: str) -> None:
    """The peer goes away halfway through a big message: the library sees the end."""
    pytest.importorskip("dbus_fast" if backend == "fast" else "dbus_next")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    refused: list[RefusedMessage] = []
    guard = BoundedSocket(ours, MAX_BODY, MAX_HEADER, refused.append)
    messages: list[Any] = []
    read, errors = _reader(backend, guard, messages.append)
    theirs.sendall(raw_message(blob=MAX_BODY * 2)[: MAX_BODY + 100])
    theirs.close()
    for _ in range(10):
        read()
        if errors:
            break
    ours.close()
    assert errors
    assert isinstance(errors[0], EOFError)
    assert not messages
    assert not refused


# ---------------------------------------------- a bigger body for one method only

BIG_IFACE = "org.example.Fwctl"
#: the one call allowed more: a string, a byte array of up to 4 x MAX_BODY, 512 bytes more
RPC = LargeCall(BIG_IFACE, "Rpc", "saya{sv}", max_body=4 * MAX_BODY, rest=512)


def rpc_body(big: bool, scope: str, request: int, option: int = 0) -> bytes:
    """A ``saya{sv}`` body marshalled by hand: ``request`` bytes, and an option
    ``x`` holding ``option`` bytes (``ay``) if ``option``."""
    order = ">" if big else "<"
    body = bytearray(struct.pack(order + "I", len(scope)) + scope.encode() + b"\0")
    body += b"\0" * (-len(body) & 3)
    body += struct.pack(order + "I", request) + b"\x5a" * request
    body += b"\0" * (-len(body) & 3)
    entries = bytearray()
    if option:
        entries += struct.pack(order + "I", 1) + b"x\0" + b"\x02ay\0"  # key, signature
        entries += b"\0" * (-(len(body) + 8 + len(entries)) & 3)
        entries += struct.pack(order + "I", option) + b"\x5a" * option
    body += struct.pack(order + "I", len(entries))
    body += b"\0" * (-len(body) & 7)
    return bytes(body + entries)


def rpc(
    serial: int, *, big: bool = False, request: int = 0, option: int = 0, **kwargs: Any
) -> bytes:
    """An Rpc call (``saya{sv}``) to ``BIG_IFACE`` unless ``kwargs`` say otherwise."""
    fields: dict[str, Any] = {"interface": BIG_IFACE, "member": "Rpc"}
    signature = kwargs.pop("signature", "saya{sv}")
    fields.update(kwargs)
    body = rpc_body(big, "debug-read", request, option)
    return raw_message(serial=serial, big=big, body_bytes=(signature, body), **fields)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_large_call_passes_and_every_other_member_keeps_the_limit(backend: str) -> None:
    """Over max_body, only the large call's interface, member and signature, with
    only its byte array big, reach the library; each refusal says which limit."""
    sent = [
        Sent(rpc(1, request=3 * MAX_BODY), fds=2),
        Sent(raw_message(serial=2, blob=2 * MAX_BODY, member="SetHints"), fds=3, refused=True),
        Sent(rpc(3, big=True, request=3 * MAX_BODY, member="Rpc")),
        Sent(rpc(4, request=2 * MAX_BODY, interface="org.example.Other"), refused=True),
        Sent(rpc(5, request=2 * MAX_BODY, member="Rpc2"), fds=4, refused=True),
        Sent(rpc(6, request=2 * MAX_BODY, signature="say"), refused=True),  # body left over
        Sent(rpc(7, request=16, option=2 * MAX_BODY), refused=True),  # big options
        Sent(rpc(8, big=True, request=16, option=2 * MAX_BODY), refused=True),
        Sent(rpc(9, request=4 * MAX_BODY), refused=True),  # over the large call's own
        Sent(rpc(10, request=MAX_BODY - 64)),  # within max_body: never looked at
        Sent(rpc(11, request=2 * MAX_BODY, kind=SIGNAL), refused=True),  # calls only
        Sent(raw_message(serial=12, text="small")),
    ]
    before = _open_fds()
    run = run_stream(backend, sent, (RPC,))
    assert [m.serial for m in run.messages] == [1, 3, 10, 12]
    first, second = run.messages[0], run.messages[1]
    assert first.member == second.member == "Rpc"
    assert first.body[0] == second.body[0] == "debug-read"
    assert bytes(first.body[1]) == bytes(second.body[1]) == b"\x5a" * (3 * MAX_BODY)
    assert len(first.unix_fds) == 2  # the fds of a passed large call reach it
    for fd in {fd for message in run.messages for fd in message.unix_fds}:
        os.close(fd)
    refused = {r.serial: r for r in run.refused}
    assert sorted(refused) == [2, 4, 5, 6, 7, 8, 9, 11]
    assert {serial: r.limit for serial, r in refused.items()} == {
        2: MAX_BODY,
        4: MAX_BODY,
        5: MAX_BODY,
        6: MAX_BODY,
        7: MAX_BODY,
        8: MAX_BODY,
        9: 4 * MAX_BODY,
        11: MAX_BODY,
    }
    # a call of the large member refused within its own limit says why
    assert (
        refused[7].detail
        == refused[8].detail
        == (
            f"only the ay argument of {BIG_IFACE}.Rpc may be bigger (up to {4 * MAX_BODY} "
            "bytes in all); the others together at most 512 bytes"
        )
    )
    assert refused[9].detail == refused[11].detail == refused[4].detail == ""
    assert refused[5].fields[MEMBER] == "Rpc2"
    assert refused[5].fds == 4
    assert refused[7].sender == SENDER
    assert refused[7].byte_order == "little"
    assert refused[8].byte_order == "big"
    assert _open_fds() == before
    assert run.guard is not None
    assert run.guard.passed_bytes == sum(len(item.data) for item in sent if not item.refused)
    assert run.guard.refused_bytes == sum(len(item.data) for item in sent if item.refused)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("big", [False, True])
def test_a_large_call_read_a_byte_at_a_time_is_decided_once_all_is_there(
    backend: str, big: bool
) -> None:
    """Header fields and body start arrive one byte per read: the decision waits."""
    allowed = rpc(1, big=big, request=2 * MAX_BODY)
    other = rpc(2, big=big, request=2 * MAX_BODY, member="Other")
    sent = [
        Sent(allowed, fds=1, trickle=400),
        Sent(other, fds=1, trickle=400, refused=True),
        Sent(raw_message(serial=3, big=big, text="after")),
    ]
    before = _open_fds()
    run = run_stream(backend, sent, (RPC,))
    assert [m.serial for m in run.messages] == [1, 3]
    assert bytes(run.messages[0].body[1]) == b"\x5a" * (2 * MAX_BODY)
    (fd,) = run.messages[0].unix_fds
    os.close(fd)
    (refused,) = run.refused
    assert refused.fields[MEMBER] == "Other"
    assert refused.fds == 1
    assert _open_fds() == before


def test_end_of_file_while_a_large_call_is_looked_at() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    refused: list[RefusedMessage] = []
    guard = BoundedSocket(ours, MAX_BODY, MAX_HEADER, refused.append, (RPC,))
    before = _open_fds()
    fd = os.open(os.devnull, os.O_RDONLY)
    data = rpc(1, request=2 * MAX_BODY)[:60]
    theirs.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
    os.close(fd)
    theirs.close()
    assert guard.recvmsg(16, 64)[0] == b""  # the library sees the end
    ours.close()
    # ours and theirs are closed, and so is the fd that came with the bytes
    assert _open_fds() == before - 2
    assert not refused


def test_a_large_call_must_start_with_a_string_and_a_byte_array() -> None:
    with pytest.raises(ValueError, match="starts with 'say'"):
        LargeCall(BIG_IFACE, "Rpc", "a{sv}ay", max_body=1, rest=1)


def test_only_fwctl_rpc_gets_a_bigger_body_and_only_when_configured() -> None:
    """[plugins.fwctl] max_request_size over what MAX_BODY holds makes Rpc (its real
    interface, member and signature) a large call; nothing else ever is."""
    from livefw.bus import ext_fwctl
    from livefw.bus.backend import MAX_BODY as DEFAULT
    from livefw.config import Config, PluginsSection
    from livefw.daemon import FWCTL_RPC, RPC_ARGUMENTS, bus_large_calls

    def large(fwctl: dict[str, Any]) -> tuple[LargeCall, ...]:
        return bus_large_calls(Config(plugins=PluginsSection.model_validate({"fwctl": fwctl})))

    assert large({}) == ()
    assert large({"max_request_size": 64 * 1024}) == ()  # the default fits
    (call,) = large({"max_request_size": 1024 * 1024})
    assert (call.interface, call.member, call.signature) == FWCTL_RPC
    assert call.max_body == 1024 * 1024 + RPC_ARGUMENTS
    assert call.rest == RPC_ARGUMENTS
    (call,) = large({"max_request_size": 2 * 1024 * 1024})
    assert call.max_body == 2 * 1024 * 1024 + RPC_ARGUMENTS
    # values the plugin refuses give no large call
    assert large({"max_request_size": 64 * 1024 * 1024}) == ()
    assert large({"max_request_size": "big"}) == ()
    assert call.max_body > DEFAULT
    # FWCTL_RPC is what the bus layer exports (its introspection is checked against
    # the XML in tests/integration/test_fwctl_bus.py)
    assert FWCTL_RPC[0] == ext_fwctl.INTERFACE
    xml = ElementTree.parse(REPO / "dbus" / f"{ext_fwctl.INTERFACE}.xml")
    (method,) = xml.findall(f"./interface[@name='{FWCTL_RPC[0]}']/method[@name='{FWCTL_RPC[1]}']")
    signature = "".join(arg.get("type", "") for arg in method if arg.get("direction") == "in")
    assert signature == FWCTL_RPC[2]


def _body_length(message: Any) -> int:
    """The body length in a message's fixed header, as the library marshals it."""
    from livefw.bus.backend import marshal

    return int(struct.unpack_from("<I", marshal(message), 4)[0])


def test_the_biggest_legitimate_bodies_fit_under_the_limit() -> None:
    """MAX_BODY's reasoning (backend.py): each method's largest valid call fits."""
    from livefw.bus.backend import MAX_BODY as DEFAULT
    from livefw.bus.backend import Message, Variant
    from livefw.compat_state import HINT_KEY_MAX, HINT_VALUE_MAX, HINTS_MAX
    from livefw.firmware_lists import CHECKSUMS_MAX

    def call(member: str, signature: str, body: list[Any]) -> Any:
        return Message(
            destination="org.freedesktop.fwupd",
            path="/",
            interface="org.freedesktop.fwupd",
            member=member,
            signature=signature,
            body=body,
        )

    checksums = [f"{index:064x}" for index in range(CHECKSUMS_MAX)]
    approved = _body_length(call("SetApprovedFirmware", "as", [checksums]))
    # every character of a hint at its widest in UTF-8 (4 bytes)
    hints = {
        f"{index:02d}" + "\U0001f600" * (HINT_KEY_MAX - 2): "\U0001f600" * HINT_VALUE_MAX
        for index in range(HINTS_MAX)
    }
    hinted = _body_length(call("SetHints", "a{ss}", [hints]))
    rpc = _body_length(
        call(
            "Rpc",
            "saya{sv}",
            ["debug-write-full", b"\0" * (64 * 1024), {"response-size": Variant("u", 1 << 20)}],
        )
    )
    assert approved <= DEFAULT, approved
    assert hinted <= DEFAULT, hinted
    assert rpc <= DEFAULT, rpc  # with the default [plugins.fwctl] max_request_size
    # and the limit is not far above the biggest of them (the margin backend.py states)
    assert 1.4 * max(approved, hinted, rpc) >= DEFAULT
