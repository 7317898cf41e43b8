"""ServiceInterface's member walk runs once per class, with the same members as before.

Both libraries walk ``inspect.getmembers(type(self))`` in ``ServiceInterface.__init__``;
livefw.bus.dbuslib keeps the D-Bus members per class (issue 17 item 1, bench/NOTES.md
item 14). These tests count the real walks and compare each livefw interface class's
members with what the library's own, uncached walk gives.
"""

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from typing import Any

import pytest

import livefw.bus
from livefw.bus import dbuslib
from livefw.bus.dbuslib import (
    PropertyAccess,
    ServiceInterface,
    dbus_property,
    method,
    signal,
)


def _service_module() -> Any:
    return importlib.import_module(
        "dbus_next.service" if dbuslib.BACKEND == "next" else "dbus_fast.service"
    )


def _members(interface: ServiceInterface) -> tuple[list[Any], list[Any], list[Any]]:
    return (
        list(ServiceInterface._get_properties(interface)),
        list(ServiceInterface._get_methods(interface)),
        list(ServiceInterface._get_signals(interface)),
    )


def _bare(cls: type[ServiceInterface]) -> ServiceInterface:
    """An instance with only the library's constructor run (livefw's need a device)."""
    interface = cls.__new__(cls)
    ServiceInterface.__init__(interface, "org.example.Test")
    return interface


def _livefw_interfaces() -> Iterator[type[ServiceInterface]]:
    for info in pkgutil.iter_modules(livefw.bus.__path__):
        importlib.import_module(f"livefw.bus.{info.name}")
    seen: set[type] = set()
    stack = list(ServiceInterface.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("livefw."):
            yield cls


def test_the_member_walk_runs_once_per_class(monkeypatch: pytest.MonkeyPatch) -> None:
    class Counted(ServiceInterface):
        @method()
        def Ping(self) -> None:
            return None

        @dbus_property(access=PropertyAccess.READ)
        def Level(self) -> "u":  # type: ignore[name-defined]  # noqa: F821
            return 1

        @signal()
        def Changed(self) -> None:
            return None

    walks: list[Any] = []
    real = inspect.getmembers

    def counting(obj: Any, predicate: Any = None) -> Any:
        walks.append(obj)
        return real(obj, predicate)

    monkeypatch.setattr(inspect, "getmembers", counting)
    made = [Counted("org.example.Counted") for _ in range(50)]
    assert walks.count(Counted) == 1
    props, methods, signals = _members(made[-1])
    assert [p.name for p in props] == ["Level"]
    assert [m.name for m in methods] == ["Ping"]
    assert [s.name for s in signals] == ["Changed"]
    assert all(_members(one) == (props, methods, signals) for one in made)


def test_every_livefw_interface_gets_the_members_of_the_library_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    classes = list(_livefw_interfaces())
    assert len(classes) >= 8  # manager, device, the ext_* interfaces, compat
    kept = {cls: _members(_bare(cls)) for cls in classes}
    # the library's own walk: its module sees the real inspect module again
    monkeypatch.setattr(_service_module(), "inspect", inspect)
    for cls in classes:
        assert kept[cls] == _members(_bare(cls)), cls.__qualname__


def test_the_library_sees_the_kept_walk_and_the_rest_of_inspect() -> None:
    seen = _service_module().inspect
    assert isinstance(seen, dbuslib._ServiceInspect)
    assert seen.iscoroutinefunction is inspect.iscoroutinefunction
    assert seen.signature is inspect.signature
