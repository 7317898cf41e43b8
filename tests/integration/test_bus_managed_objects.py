"""GetManagedObjects' one-pass answer equals the library's, and falls back to it."""

# ruff: noqa: F821, F722 - D-Bus signatures as annotations (no postponed evaluation here)

from livefw.bus.backend import (
    LivefwBus,
    Message,
    MessageBus,
    MessageType,
    PropertyAccess,
    ServiceInterface,
    call,
    dbus_property,
    disconnect,
)
from livefw.testing import PrivateBus

ROOT = "/org/example/Manager"


class Thing(ServiceInterface):
    def __init__(self, name: str, index: int) -> None:
        super().__init__(name)
        self.index = index
        self.fail = False

    @dbus_property(access=PropertyAccess.READ)
    def Index(self) -> "u":
        if self.fail:
            raise RuntimeError("getter broke")
        return self.index

    @dbus_property(access=PropertyAccess.READ)
    def Names(self) -> "as":
        return [f"n{self.index}", "x"]

    @dbus_property(access=PropertyAccess.READ)
    def Map(self) -> "a{ss}":
        return {"k": str(self.index)}

    @dbus_property(access=PropertyAccess.READ, disabled=True)
    def Hidden(self) -> "s":
        return "never"

    @dbus_property(access=PropertyAccess.WRITE)
    def WriteOnly(self) -> "s":
        return "never"

    @WriteOnly.setter  # type: ignore[no-redef]
    def WriteOnly(self, value: "s") -> None:
        pass


class Empty(ServiceInterface):
    pass


async def _ask(address: str, name: str) -> Message:
    client = await MessageBus(bus_address=address).connect()
    try:
        return await call(
            client,
            Message(
                destination=name,
                path=ROOT,
                interface="org.freedesktop.DBus.ObjectManager",
                member="GetManagedObjects",
            ),
        )
    finally:
        disconnect(client)


async def _with_server(private_bus: PrivateBus) -> tuple[LivefwBus, list[Thing]]:
    server = LivefwBus(bus_address=private_bus.address, object_manager_path=ROOT)
    await server.connect()
    things = []
    for index in range(5):
        thing = Thing("org.example.Thing", index)
        things.append(thing)
        server.export_object(f"{ROOT}/thing{index}", [thing, Empty("org.example.Empty")])
    server.export(f"{ROOT}/secret/inner", Thing("org.example.Thing", 99))
    server.hide_prefix(f"{ROOT}/secret")
    server.export("/elsewhere", Thing("org.example.Thing", 7))
    return server, things


async def test_one_pass_answer_equals_the_library_answer(private_bus: PrivateBus) -> None:
    server, _ = await _with_server(private_bus)
    try:
        fast = await _ask(private_bus.address, server.unique_name)
        assert fast.message_type == MessageType.METHOD_RETURN, fast.body
        server._managed_objects_body = lambda root: None  # type: ignore[method-assign]
        library = await _ask(private_bus.address, server.unique_name)
        assert library.message_type == MessageType.METHOD_RETURN, library.body
        assert fast.signature == library.signature == "a{oa{sa{sv}}}"
        assert fast.body == library.body
        objects = fast.body[0]
        assert sorted(objects) == [f"{ROOT}/thing{i}" for i in range(5)]  # no hidden, no other
        thing = objects[f"{ROOT}/thing3"]
        assert thing["org.example.Empty"] == {}
        assert set(thing["org.example.Thing"]) == {"Index", "Names", "Map"}
        assert thing["org.example.Thing"]["Index"].value == 3
    finally:
        disconnect(server)


async def test_a_failing_getter_gets_the_library_error(private_bus: PrivateBus) -> None:
    server, things = await _with_server(private_bus)
    try:
        things[2].fail = True
        assert server._managed_objects(ROOT) is None
        reply = await _ask(private_bus.address, server.unique_name)
        assert reply.message_type == MessageType.ERROR
    finally:
        disconnect(server)


class CachedThing(Thing):
    livefw_cache_properties = True


async def test_cached_property_maps_follow_properties_changed(private_bus: PrivateBus) -> None:
    """A cacheable interface's map is reused until its PropertiesChanged (issue 17.4)."""
    import asyncio

    server = LivefwBus(bus_address=private_bus.address, object_manager_path=ROOT)
    await server.connect()
    client = await MessageBus(bus_address=private_bus.address).connect()
    try:
        cached, plain = CachedThing("org.example.Thing", 1), Thing("org.example.Thing", 2)
        server.export_object(f"{ROOT}/cached", [cached])
        server.export_object(f"{ROOT}/plain", [plain])
        seen: list[tuple[str, int]] = []
        client.add_message_handler(
            lambda m: (
                seen.append((m.path, m.body[1]["Index"].value))
                if m.member == "PropertiesChanged"
                else None
            )
        )
        await call(
            client,
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=["type='signal',member='PropertiesChanged'"],
            ),
        )

        def index(objects: dict[str, dict[str, dict[str, object]]], name: str) -> object:
            return objects[f"{ROOT}/{name}"]["org.example.Thing"]["Index"].value  # type: ignore[attr-defined]

        first = server._managed_objects(ROOT)
        assert first is not None
        cached.index, plain.index = 10, 20
        second = server._managed_objects(ROOT)
        assert second is not None
        assert index(second, "cached") == 1  # no signal yet: the cached map
        assert index(second, "plain") == 20  # not cacheable: read every time
        # the signal is sent from the interface's path by index, not by a scan
        parent = type(server).__mro__[1]
        original = parent._interface_signal_notify
        parent._interface_signal_notify = None  # type: ignore[assignment]
        try:
            cached.emit_properties_changed({"Index": 10})
        finally:
            parent._interface_signal_notify = original  # type: ignore[method-assign]
        third = server._managed_objects(ROOT)
        assert third is not None
        assert index(third, "cached") == 10
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
        assert seen == [(f"{ROOT}/cached", 10)]
        server.unexport(f"{ROOT}/cached")
        assert id(cached) not in server._property_maps
        assert id(cached) not in server._exported_at
    finally:
        disconnect(client)
        disconnect(server)


async def _objects(address: str, name: str) -> dict[str, dict[str, dict[str, object]]]:
    reply = await _ask(address, name)
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    assert reply.signature == "a{oa{sa{sv}}}"
    objects: dict[str, dict[str, dict[str, object]]] = reply.body[0]
    return objects


def _index(objects: dict[str, dict[str, dict[str, object]]], name: str) -> object:
    return objects[f"{ROOT}/{name}"]["org.example.Thing"]["Index"].value  # type: ignore[attr-defined]


async def test_kept_bytes_follow_changes_exports_and_hidden_prefixes(
    private_bus: PrivateBus,
) -> None:
    """The marshalled reply kept between calls shows every announced change (issue 17.4).

    Each reply is compared with the library's own marshalling of the same objects,
    so a kept object's bytes that went stale, or a wrong offset, fails here.
    """
    server = LivefwBus(bus_address=private_bus.address, object_manager_path=ROOT)
    await server.connect()
    name = str(server.unique_name)
    try:
        cached = [CachedThing("org.example.Thing", i) for i in range(6)]
        for index, thing in enumerate(cached):
            server.export_object(f"{ROOT}/c{index}", [thing])
        plain = Thing("org.example.Thing", 50)
        server.export_object(f"{ROOT}/plain", [plain, CachedThing("org.example.Cached", 51)])

        async def check() -> dict[str, dict[str, dict[str, object]]]:
            objects = await _objects(private_bus.address, name)
            assert objects == server._managed_objects(ROOT)  # the library's marshalling of it
            return objects

        first = await check()
        assert [_index(first, f"c{i}") for i in range(6)] == list(range(6))
        assert server._managed_body is None  # "plain" is read on every call
        # a property change announced with PropertiesChanged: the next reply has it
        cached[2].index = 200
        cached[2].emit_properties_changed({"Index": 200})
        assert _index(await check(), "c2") == 200
        # a non-cacheable interface is read on every call, without a signal
        plain.index = 500
        assert _index(await check(), "plain") == 500
        # an object added, and one removed
        server.export_object(f"{ROOT}/added", [CachedThing("org.example.Thing", 77)])
        server.unexport(f"{ROOT}/c4")
        objects = await check()
        assert _index(objects, "added") == 77
        assert f"{ROOT}/c4" not in objects
        # an interface added to an object that has one
        server.export(f"{ROOT}/c1", CachedThing("org.example.Second", 9))
        assert set((await check())[f"{ROOT}/c1"]) == {"org.example.Thing", "org.example.Second"}
        # hidden prefixes leave the reply
        server.hide_prefix(f"{ROOT}/c3")
        assert f"{ROOT}/c3" not in await check()
        # every object kept: the whole body is reused until something changes
        server.unexport(f"{ROOT}/plain")
        await check()
        kept = server._managed_body
        assert kept is not None
        assert server._managed_objects_body(ROOT) is kept[1]
        # the kept entries are views of the kept body, not copies
        assert all(
            isinstance(part, memoryview) and part.obj is kept[1].data
            for part in server._object_fragments.values()
        )
        cached[5].index = 555
        cached[5].emit_properties_changed({"Index": 555})
        assert server._managed_body is None
        assert _index(await check(), "c5") == 555
    finally:
        disconnect(server)


async def test_kept_entries_hold_their_bytes_once(private_bus: PrivateBus) -> None:
    """An object whose entry is kept as bytes keeps no property maps beside them.

    Issue 17 item 2: at 1,000 devices the maps (a Variant per property) were ~4 MiB
    next to the 2 MB of bytes they had been marshalled into. Maps of objects that are
    read on every call stay (their cacheable interfaces' getters are not run again).
    """
    server = LivefwBus(bus_address=private_bus.address, object_manager_path=ROOT)
    await server.connect()
    try:
        cached = [CachedThing("org.example.Thing", i) for i in range(4)]
        for index, thing in enumerate(cached):
            server.export_object(f"{ROOT}/c{index}", [thing, Empty("org.example.Empty")])
        side = CachedThing("org.example.Cached", 51)
        server.export_object(f"{ROOT}/plain", [Thing("org.example.Thing", 50), side])
        body = server._managed_objects_body(ROOT)
        assert body is not None
        assert not any(id(thing) in server._property_maps for thing in cached)
        assert id(side) in server._property_maps  # its object is marshalled every call
        # a change rebuilds the object's entry from its getters
        cached[1].index = 100
        cached[1].emit_properties_changed({"Index": 100})
        objects = await _objects(private_bus.address, str(server.unique_name))
        assert _index(objects, "c1") == 100
        assert objects == server._managed_objects(ROOT)
    finally:
        disconnect(server)


class BigThing(CachedThing):
    @dbus_property(access=PropertyAccess.READ)
    def Blob(self) -> "s":
        return "b" * 3000


async def test_a_large_body_built_is_followed_by_a_trim(private_bus: PrivateBus) -> None:
    """Building the kept body returns the freed heap pages (livefw.memory), once."""
    from livefw import memory

    trims: list[int] = []
    original = memory.trim
    memory.trim = lambda: trims.append(1) or True  # type: ignore[assignment]
    server = LivefwBus(bus_address=private_bus.address, object_manager_path=ROOT)
    await server.connect()
    try:
        for index in range(120):
            server.export_object(f"{ROOT}/b{index}", [BigThing("org.example.Thing", index)])
        body = server._managed_objects_body(ROOT)
        assert body is not None
        assert len(body.data) >= memory.TRIM_AFTER_BYTES
        assert trims == [1]
        assert server._managed_objects_body(ROOT) is body  # kept: no build, no trim
        assert trims == [1]
    finally:
        memory.trim = original  # type: ignore[method-assign]
        disconnect(server)
