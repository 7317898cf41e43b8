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
import importlib
import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from livefw import testing
from livefw.bus.framing import (
    DRAIN_PER_CALL,
    MEMBER,
    NO_REPLY_EXPECTED,
    SIGNAL,
    BoundedSocket,
    RefusedMessage,
)

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


def run_stream(backend: str, sent: list[Sent]) -> Run:
    """Send ``sent`` from one end of a socketpair, read it through the guard."""
    pytest.importorskip("dbus_fast" if backend == "fast" else "dbus_next")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    run = Run()
    guard = BoundedSocket(ours, MAX_BODY, MAX_HEADER, run.refused.append)
    run.guard = guard
    read, errors = _reader(backend, guard, run.messages.append)
    expected = sum(1 for item in sent if not item.refused)

    def send() -> None:
        for item in sent:
            fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(item.fds)]
            try:
                if fds:
                    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    done = theirs.sendmsg([item.data], ancillary)
                    theirs.sendall(item.data[done:])
                else:
                    theirs.sendall(item.data)
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


def test_the_native_limit_grows_with_the_fwctl_request_size() -> None:
    """An Rpc request of [plugins.fwctl] max_request_size must fit in one message."""
    from livefw.bus.backend import MAX_BODY as DEFAULT
    from livefw.config import Config, PluginsSection
    from livefw.daemon import RPC_ARGUMENTS, bus_body_limit

    def limit(fwctl: dict[str, Any]) -> int:
        return bus_body_limit(Config(plugins=PluginsSection.model_validate({"fwctl": fwctl})))

    assert limit({}) == DEFAULT
    assert limit({"max_request_size": 64 * 1024}) == DEFAULT  # the default fits
    assert limit({"max_request_size": 1024 * 1024}) == 1024 * 1024 + RPC_ARGUMENTS
    assert limit({"max_request_size": 2 * 1024 * 1024}) == 2 * 1024 * 1024 + RPC_ARGUMENTS
    # values the plugin refuses leave the default
    assert limit({"max_request_size": 64 * 1024 * 1024}) == DEFAULT
    assert limit({"max_request_size": "big"}) == DEFAULT


def _body_length(message: Any) -> int:
    """The body length in a message's fixed header, as the library marshals it."""
    from livefw.bus.backend import marshal

    return int(struct.unpack_from("<I", marshal(message), 4)[0])


def test_the_biggest_legitimate_bodies_fit_under_the_limit() -> None:
    """MAX_BODY's reasoning (backend.py): each method's largest valid call fits."""
    from livefw.bus.backend import MAX_BODY as DEFAULT
    from livefw.bus.backend import Message, Variant
    from livefw.compat_state import HINT_KEY_MAX, HINT_VALUE_MAX, HINTS_MAX
    from livefw.config import Config
    from livefw.daemon import bus_body_limit
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
    assert rpc <= bus_body_limit(Config()), rpc
    # and the limit is not far above the biggest of them (the margin backend.py states)
    assert 1.4 * max(approved, hinted, rpc) >= DEFAULT
