"""The backend's message writer survives a full socket (dbus-next's does not)."""

import asyncio
import os
import socket
from typing import Any

import pytest
from dbus_next.aio.message_bus import _MessageWriter  # the unfixed writer, for contrast

from livefw.bus.dbuslib import Message, _Writer


class _StubBus:
    """Just what a message writer touches on its bus."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._negotiate_unix_fd = True
        self.unique_name = ":1.1"
        self.finalized: Exception | None = None
        self.closed_after_send: list[int] = []
        self._owned: set[int] = set()

    def _finalize(self, error: Exception) -> None:
        self.finalized = error

    def _fds_sent(self, fds: list[int]) -> None:
        for fd in fds:
            if fd in self._owned:
                os.close(fd)
                self.closed_after_send.append(fd)


def _big(serial: int) -> Message:
    message = Message(
        destination="x.y",
        path="/x",
        interface="x.y",
        member="Big",
        signature="s",
        body=["x" * 200_000],
    )
    message.serial = serial
    return message


@pytest.fixture
def full_socket() -> Any:
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.setblocking(False)
    yield ours, peer
    ours.close()
    peer.close()


def _fill_and_retry(writer_class: type, sock: socket.socket) -> _StubBus:
    loop = asyncio.new_event_loop()
    try:
        bus = _StubBus(sock, loop)
        writer = writer_class(bus)
        for serial in (1, 2, 3):
            writer.buffer_message(_big(serial))
        # The peer never reads: the first call fills the socket with part of message 1,
        # the second finds it full, as when the loop wakes a writer on a busy bus.
        writer.write_callback()
        writer.write_callback()
        return bus
    finally:
        loop.close()


def test_dbus_next_writer_drops_the_connection_on_eagain(full_socket: Any) -> None:
    bus = _fill_and_retry(_MessageWriter, full_socket[0])
    assert isinstance(bus.finalized, BlockingIOError)


def test_backend_writer_waits_for_the_socket_instead(full_socket: Any) -> None:
    bus = _fill_and_retry(_Writer, full_socket[0])
    assert bus.finalized is None


def test_backend_writer_closes_handed_over_fds_once_sent(full_socket: Any) -> None:
    sock, peer = full_socket
    loop = asyncio.new_event_loop()
    try:
        bus = _StubBus(sock, loop)
        read_end, write_end = os.pipe()
        bus._owned.add(write_end)
        message = Message(
            destination="x.y",
            path="/x",
            interface="x.y",
            member="Fd",
            signature="h",
            body=[0],
            unix_fds=[write_end],
        )
        message.serial = 7
        writer = _Writer(bus)
        writer.buffer_message(message)
        writer.write_callback()
        assert bus.closed_after_send == [write_end]
        _, fds, _, _ = socket.recv_fds(peer, 65536, 4)
        assert len(fds) == 1  # the peer got its own copy
        for fd in (*fds, read_end):
            os.close(fd)
    finally:
        loop.close()
