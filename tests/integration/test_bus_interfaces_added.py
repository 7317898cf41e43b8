"""InterfacesAdded: the library's answer read in one pass, and none before the name.

livefwd exports every object before it requests its name and announces none of them
(issue 17 item 1, bench/NOTES.md item 14): dbus-daemon delivers a signal to a match
rule that names a sender only while the sending connection is that name's primary
owner (bus/signals.c ``match_rule_matches``), so a client watching
``sender='org.livefw.Daemon1'`` could never see them, and one that sees the name appear
reads GetManagedObjects, which lists every object; GLib's ``GDBusObjectManagerServer``
recommends the same (export first, then set the connection). Objects exported after
the request are announced, read in one pass without the library's callback per value.
"""

# ruff: noqa: F821, F722 - D-Bus signatures as annotations (no postponed evaluation here)

import asyncio
import inspect
from typing import Any

import pytest

from livefw.bus.backend import (
    LivefwBus,
    Message,
    MessageBus,
    NameFlag,
    PropertyAccess,
    ServiceInterface,
    call_bus_driver,
    dbus_property,
    disconnect,
)
from livefw.testing import PrivateBus

ROOT = "/org/example/Manager"
OWNER = "org.example.Owner"


class Thing(ServiceInterface):
    def __init__(self, index: int, fail: bool = False) -> None:
        super().__init__("org.example.Thing")
        self.index = index
        self.fail = fail

    @dbus_property(access=PropertyAccess.READ)
    def Index(self) -> "u":
        if self.fail:
            raise RuntimeError("getter broke")
        return self.index

    @dbus_property(access=PropertyAccess.READ)
    def Names(self) -> "as":
        return [f"n{self.index}", "x"]

    @dbus_property(access=PropertyAccess.READ, disabled=True)
    def Hidden(self) -> "s":
        return "never"


class Empty(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.example.Empty")


class Slow(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.example.Slow")

    @dbus_property(access=PropertyAccess.READ)
    async def Level(self) -> "u":
        await asyncio.sleep(0)
        return 42


def _library_values(interfaces: list[ServiceInterface]) -> dict[str, Any]:
    """What the library's own per-value path gives (synchronous getters only)."""
    values: dict[str, Any] = {}

    def done(iface: Any, result: Any, _user: Any, error: Any) -> None:
        values[iface.name] = {} if error is not None else dict(result)

    for interface in interfaces:
        ServiceInterface._get_all_property_values(interface, done)
    return values


async def _watch(address: str, rule: str) -> tuple[Any, list[Message]]:
    client = await MessageBus(bus_address=address).connect()
    seen: list[Message] = []
    client.add_message_handler(lambda m: seen.append(m) if m.member == "InterfacesAdded" else None)
    await call_bus_driver(client, "AddMatch", "s", [rule])
    return client, seen


async def _until(seen: list[Message], count: int) -> None:
    for _ in range(250):
        if len(seen) >= count:
            return
        await asyncio.sleep(0.02)


async def test_the_one_pass_signal_equals_the_library_answer(private_bus: PrivateBus) -> None:
    server = LivefwBus(bus_address=private_bus.address, object_manager_path=ROOT)
    await server.connect()
    client, seen = await _watch(
        private_bus.address, f"type='signal',path='{ROOT}',member='InterfacesAdded'"
    )
    try:
        objects: dict[str, list[ServiceInterface]] = {
            f"{ROOT}/a": [Thing(1), Empty()],
            f"{ROOT}/broken": [Thing(2, fail=True), Empty()],
            f"{ROOT}/slow": [Thing(3), Slow()],
        }
        for path, interfaces in objects.items():
            server.export_object(path, interfaces)
        await _until(seen, len(objects))
        got = {m.body[0]: m.body[1] for m in seen}
        assert set(got) == set(objects)
        assert all(m.path == ROOT and m.signature == "oa{sa{sv}}" for m in seen)
        assert got[f"{ROOT}/a"] == _library_values(objects[f"{ROOT}/a"])
        assert list(got[f"{ROOT}/a"]) == ["org.example.Thing", "org.example.Empty"]
        assert list(got[f"{ROOT}/a"]["org.example.Thing"]) == ["Index", "Names"]
        # a getter that raises: that interface goes without properties, as before
        assert got[f"{ROOT}/broken"] == {"org.example.Thing": {}, "org.example.Empty": {}}
        # an async getter: the library's way, awaited
        assert got[f"{ROOT}/slow"]["org.example.Slow"]["Level"].value == 42
        assert got[f"{ROOT}/slow"]["org.example.Thing"]["Index"].value == 3
    finally:
        disconnect(client)
        disconnect(server)


async def test_exports_read_each_getter_kind_once_not_each_value(
    private_bus: PrivateBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library asks ``iscoroutinefunction`` for every value of every export."""
    server = LivefwBus(bus_address=private_bus.address, object_manager_path=ROOT)
    await server.connect()
    asked: list[Any] = []
    real = inspect.iscoroutinefunction

    def counting(function: Any) -> bool:
        asked.append(function)
        return real(function)

    monkeypatch.setattr(inspect, "iscoroutinefunction", counting)
    try:
        for index in range(100):
            server.export_object(f"{ROOT}/t{index}", [Thing(index), Empty()])
        assert len(asked) <= 3  # at most once per getter function (3 in Thing)
    finally:
        disconnect(server)


async def test_signals_before_the_name_reach_only_rules_without_a_sender(
    private_bus: PrivateBus,
) -> None:
    server = LivefwBus(bus_address=private_bus.address, object_manager_path=ROOT)
    await server.connect()
    by_name, by_name_seen = await _watch(
        private_bus.address, f"type='signal',sender='{OWNER}',member='InterfacesAdded'"
    )
    anyone, anyone_seen = await _watch(
        private_bus.address, "type='signal',member='InterfacesAdded'"
    )
    try:
        server.export_object(f"{ROOT}/before", [Thing(1)])
        await server.request_name(OWNER, NameFlag.DO_NOT_QUEUE)
        server.export_object(f"{ROOT}/after", [Thing(2)])
        await _until(anyone_seen, 2)
        await _until(by_name_seen, 1)
        assert [m.body[0] for m in anyone_seen] == [f"{ROOT}/before", f"{ROOT}/after"]
        assert [m.body[0] for m in by_name_seen] == [f"{ROOT}/after"]
    finally:
        disconnect(anyone)
        disconnect(by_name)
        disconnect(server)


async def test_a_quiet_bus_announces_only_what_is_exported_after_start_announcing(
    private_bus: PrivateBus,
) -> None:
    """livefwd's bus (``announce=False``) sends no InterfacesAdded/Removed for start-up."""
    server = LivefwBus(bus_address=private_bus.address, object_manager_path=ROOT, announce=False)
    await server.connect()
    client = await MessageBus(bus_address=private_bus.address).connect()
    seen: list[Message] = []
    client.add_message_handler(
        lambda m: seen.append(m) if m.member and m.member.startswith("Interfaces") else None
    )
    # a rule without a sender: the only kind that could see signals before the name
    await call_bus_driver(client, "AddMatch", "s", [f"type='signal',path='{ROOT}'"])
    try:
        for index in range(3):
            server.export_object(f"{ROOT}/t{index}", [Thing(index), Empty()])
        server.unexport(f"{ROOT}/t2")
        server.start_announcing()
        await server.request_name(OWNER, NameFlag.DO_NOT_QUEUE)
        server.export_object(f"{ROOT}/late", [Thing(9)])
        server.unexport(f"{ROOT}/t1")
        await _until(seen, 2)
        await asyncio.sleep(0.2)  # anything sent before would have arrived first
        assert [(m.member, m.body[0]) for m in seen] == [
            ("InterfacesAdded", f"{ROOT}/late"),
            ("InterfacesRemoved", f"{ROOT}/t1"),
        ]
        reply = await client.call(
            Message(
                destination=OWNER,
                path=ROOT,
                interface="org.freedesktop.DBus.ObjectManager",
                member="GetManagedObjects",
            )
        )
        assert reply is not None
        assert sorted(reply.body[0]) == [f"{ROOT}/late", f"{ROOT}/t0"]
    finally:
        disconnect(client)
        disconnect(server)
