"""Replies marshalled ahead (issue 17): the same bytes as the library's marshaller."""

import asyncio
import contextlib
import socket
from typing import Any

import pytest

from livefw.bus.dbuslib import Message, MessageType, Variant, _Writer, marshal, marshal_body
from livefw.bus.prebuilt import (
    ArrayElement,
    ArrayReply,
    Prebuilt,
    _prebuilt_message,
    array_body,
    dict_body,
    dict_entry,
)


def _device(index: int) -> dict[str, Any]:
    # lengths vary so that elements start both 8-aligned and at 4 modulo 8
    return {
        "DeviceId": Variant("s", "d" * (index % 5)),
        "Flags": Variant("t", index),
        "Guid": Variant("as", ["g"] * (index % 3)),
        "Name": Variant("s", "n" * index),
    }


def test_array_body_is_the_library_marshalling() -> None:
    devices = [_device(i) for i in range(23)]
    elements = [ArrayElement("a{sv}", d) for d in devices]
    assert array_body(elements) == marshal_body("aa{sv}", [devices])
    offsets = set()
    offset = 4
    for element in elements:
        offset += -offset & 3
        offsets.add(offset & 7)
        offset += len(element.at(offset))
    assert offsets == {0, 4}  # both placements were met
    assert array_body([]) == marshal_body("aa{sv}", [[]])


def test_dict_body_is_the_library_marshalling() -> None:
    objects = {
        f"/o/{i}": {"org.example.I": {"P": Variant("s", "x" * i), "Q": Variant("ay", b"y" * i)}}
        for i in range(17)
    }
    entries = [dict_entry("{oa{sa{sv}}}", path, value) for path, value in objects.items()]
    assert dict_body(entries) == marshal_body("a{oa{sa{sv}}}", [objects])
    assert dict_body([]) == marshal_body("a{oa{sa{sv}}}", [{}])


def test_array_reply_reuses_the_body_until_an_element_changes() -> None:
    reply = ArrayReply("aa{sv}")
    devices = [_device(i) for i in range(4)]
    elements = [ArrayElement("a{sv}", d) for d in devices]
    first = reply.reply(list(elements))
    assert reply.reply(list(elements)) is first
    # the elements' bytes are views of the kept body, and only those are kept
    assert all(isinstance(e._part, memoryview) and e._part.obj is first.data for e in elements)
    assert all(e.value is None for e in elements)
    elements[2] = ArrayElement("a{sv}", _device(99))
    devices[2] = _device(99)
    second = reply.reply(list(elements))
    assert second is not first
    assert second.data == marshal_body("aa{sv}", [devices])
    assert reply.reply(elements[:3]).data == marshal_body("aa{sv}", [devices[:3]])


@pytest.mark.parametrize(
    ("signature", "values"),
    [
        ("a{sv}", [_device(i) for i in range(7)] + [{}]),
        ("as", [["x" * i] * (i % 3) for i in range(5)]),
        ("a(st)", [[["s" * i, i]] * (i % 3) for i in range(5)]),
    ],
)
def test_an_element_keeps_one_form_of_its_bytes_and_not_its_value(
    signature: str, values: list[Any]
) -> None:
    """Either placement comes from the one kept form (issue 17 item 2: the device
    dicts were kept beside their bytes)."""
    for value in values:
        at0 = marshal_body(signature, [value])
        at4 = marshal_body("u" + signature, [0, value])[4:]
        element = ArrayElement(signature, value)
        assert element.at(4) == at4
        assert element.value is None  # marshalled: the bytes stand for it
        assert element.at(0) == at0
        assert element.at(4) == at4
        body = memoryview(b"...." + at4)
        element.place(4, body[4:])
        assert element.at(4) is not None
        assert bytes(element.at(4)) == at4
        assert element.at(0) == at0
        element.place(0, memoryview(at0))
        assert element.at(4) == at4


def test_a_prebuilt_reply_is_the_same_message_on_the_wire() -> None:
    call = Message(
        destination="org.example",
        path="/",
        interface="org.example.I",
        member="GetDevices",
        sender=":1.42",
        serial=7,
    )
    devices = [_device(i) for i in range(5)]
    plain = Message.new_method_return(call, "aa{sv}", [devices])
    plain.serial = 9
    prebuilt = _prebuilt_message(
        Message.new_method_return(
            call,
            "aa{sv}",
            [Prebuilt("aa{sv}", array_body([ArrayElement("a{sv}", d) for d in devices]))],
        ),
        Prebuilt("aa{sv}", array_body([ArrayElement("a{sv}", d) for d in devices])),
    )
    prebuilt.serial = 9
    assert prebuilt.message_type == MessageType.METHOD_RETURN
    assert marshal(prebuilt) == marshal(plain)


def test_prebuilt_bodies_refuse_fds_and_other_signatures() -> None:
    with pytest.raises(ValueError, match="file descriptors"):
        Prebuilt("ah", b"")
    call = Message(destination="org.example", path="/", member="M", sender=":1.2", serial=3)
    reply = Message.new_method_return(call, "as", [["x"]])
    with pytest.raises(ValueError, match="prebuilt body"):
        _prebuilt_message(reply, Prebuilt("aa{sv}", array_body([])))


class _StubBus:
    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._negotiate_unix_fd = True
        self.unique_name = ":1.1"
        self.finalized: Exception | None = None

    def _finalize(self, error: Exception) -> None:
        self.finalized = error

    def _fds_sent(self, fds: list[int]) -> None:
        pass


def test_the_writer_sends_header_then_body_through_a_full_socket() -> None:
    """A prebuilt reply bigger than the socket buffer arrives whole, in order."""
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.setblocking(False)
    peer.setblocking(False)
    loop = asyncio.new_event_loop()
    try:
        call = Message(destination="org.example", path="/", member="M", sender=":1.2", serial=3)
        devices = [_device(i) | {"Big": Variant("s", "z" * 5000)} for i in range(60)]
        body = Prebuilt("aa{sv}", array_body([ArrayElement("a{sv}", d) for d in devices]))
        messages = []
        for serial in (10, 11):
            message = _prebuilt_message(Message.new_method_return(call, "aa{sv}", [body]), body)
            message.serial = serial
            messages.append(message)
        bus = _StubBus(ours, loop)
        writer = _Writer(bus)
        for message in messages:
            writer.buffer_message(message)
        received = bytearray()
        expected = b"".join(marshal(m) for m in messages)
        for _ in range(10_000):
            writer.write_callback(remove_writer=False)
            with contextlib.suppress(BlockingIOError):
                received += peer.recv(1 << 16)
            if len(received) >= len(expected):
                break
        assert bus.finalized is None
        assert bytes(received) == expected
    finally:
        loop.close()
        ours.close()
        peer.close()


def test_array_reply_for_the_same_items_object_reuses_the_body() -> None:
    reply = ArrayReply("aa{sv}")
    built: list[int] = []

    def element(index: int) -> ArrayElement:
        built.append(index)
        return ArrayElement("a{sv}", _device(index))

    items = [1, 2, 3]
    first = reply.reply_for(items, element)
    assert reply.reply_for(items, element) is first
    assert built == [1, 2, 3]
    second = reply.reply_for([1, 2], element)  # another list: built again
    assert built == [1, 2, 3, 1, 2]
    assert second.data == marshal_body("aa{sv}", [[_device(1), _device(2)]])
