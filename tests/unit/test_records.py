"""The classes that are :class:`livefw.record.Frozen` and :class:`livefw.record.Record`
records behave as the ``@dataclass(frozen=True)`` and ``@dataclass`` classes they were
(issue 17 item 1: they left ``@dataclass`` only for what building one costs at import)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from typing import Any

import pytest

import livefw.kernel.uapi
from livefw.record import FACTORY, Frozen, Record

#: the modules outside livefw.kernel.uapi with Frozen records
MODULES = (
    "livefw.bus.framing",
    "livefw.engine",
    "livefw.entrypoints",
    "livefw.fwupd_service",
    "livefw.hostinfo",
    "livefw.kernel.provider",
    "livefw.kernel.sim.fwctl_model",
    "livefw.kernel.sim.vfs",
    "livefw.plugin",
    "livefw.plugins.fwctl.context",
    "livefw.plugins.fwctl.device",
    "livefw.plugins.liveupdate.records",
    "livefw.plugins.pfru.context",
    "livefw.plugins.pfru.telemetry",
)

BASES = (Record, Frozen)

#: field values for a class whose __post_init__ checks them (ints for the others)
SAMPLES: dict[str, list[Any]] = {"LargeCall": ["org.example.I", "Put", "sayh", 1000, 8]}


def _records() -> list[type[Record]]:
    found: dict[str, type[Record]] = {}
    package = livefw.kernel.uapi
    names = [info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    for name in [*names, *MODULES]:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Record) and value not in BASES:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[name] for name in sorted(found)]


RECORDS = _records()


def test_the_start_paths_structures_are_records() -> None:
    """The converted classes are all found (a rename would empty the checks below)."""
    names = {cls.__name__ for cls in RECORDS}
    assert {"CapsuleHeader", "UpdateCapInfo", "EsrtEntry", "EfiTime", "Mlx5Command"} <= names
    assert {"LargeCall", "SecurityAttr", "Payload", "TelemetryRead", "RpcPlan"} <= names
    assert {"UEvent", "RpcResult", "SessionInfo", "LoadOption"} <= names  # FACTORY defaults
    assert {"Attr", "Dir", "PluginRecord", "HostInfo", "RefusedMessage"} <= names  # mutable
    assert len(RECORDS) >= 49


def _twin(cls: type[Record]) -> tuple[type[Any], list[inspect.Parameter]]:
    """The frozen dataclass with the same fields, defaults and name as ``cls``."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    spec: list[Any] = []
    required = [
        1000 + index for index, p in enumerate(params) if p.default is inspect.Parameter.empty
    ]
    for param in params:
        if param.default is inspect.Parameter.empty:
            spec.append((param.name, Any))
        elif param.default is FACTORY:  # the type of what an instance gets, made afresh
            made = type(getattr(cls(*required), param.name))
            spec.append((param.name, Any, dataclasses.field(default_factory=made)))
        else:
            spec.append((param.name, Any, dataclasses.field(default=param.default)))
    namespace = {"__post_init__": cls.__post_init__} if hasattr(cls, "__post_init__") else {}
    frozen = issubclass(cls, Frozen)
    twin = dataclasses.make_dataclass(cls.__name__, spec, frozen=frozen, namespace=namespace)
    twin.__qualname__ = cls.__qualname__
    return twin, params


@pytest.mark.parametrize("cls", RECORDS, ids=lambda cls: cls.__qualname__)
def test_record_behaves_as_its_dataclass(cls: type[Record]) -> None:
    twin, params = _twin(cls)
    # __init__ takes the fields in _FIELDS order, positionally or by keyword
    assert tuple(p.name for p in params) == cls._FIELDS
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
    assert cls.__match_args__ == cls._FIELDS  # type: ignore[attr-defined]
    values = SAMPLES.get(cls.__name__) or [1000 + index for index in range(len(params))]
    mine, theirs = cls(*values), twin(*values)
    assert repr(mine) == repr(theirs)
    if issubclass(cls, Frozen):
        assert hash(mine) == hash(theirs)
    else:  # mutable: no hash, as @dataclass(eq=True) without frozen
        assert cls.__hash__ is None
        assert twin.__hash__ is None
    assert mine == cls(**dict(zip(cls._FIELDS, values, strict=True)))
    assert mine != cls(*values[:-1], values[-1] + 1)
    # only the very same class compares equal
    assert mine != theirs
    assert theirs != mine
    assert mine.__eq__(theirs) is NotImplemented
    assert mine != tuple(values)
    # defaults: the same objects the dataclass would use
    required = [p for p in params if p.default is inspect.Parameter.empty]
    if hasattr(cls, "__post_init__"):  # it checks the values: a wrong one fails alike
        with pytest.raises(ValueError, match="signature") as mine_error:
            cls(*values[:2], "s", *values[3:])
        with pytest.raises(ValueError, match="signature") as their_error:
            twin(*values[:2], "s", *values[3:])
        assert str(mine_error.value) == str(their_error.value)
    short, short_twin = cls(*values[: len(required)]), twin(*values[: len(required)])
    assert repr(short) == repr(short_twin)
    for param in params:
        mine_value, their_value = getattr(short, param.name), getattr(short_twin, param.name)
        if param.default is FACTORY:
            # a new value each instance, as field(default_factory=...) gives; shown alike
            assert type(mine_value) is type(their_value)
            assert mine_value == their_value
            assert mine_value is not getattr(cls(*values[: len(required)]), param.name)
            twin_param = inspect.signature(twin.__init__).parameters[param.name]
            assert repr(param.default) == repr(twin_param.default) == "<factory>"
        else:
            assert mine_value is their_value
    if not issubclass(cls, Frozen):
        # mutable: a field is assigned as on the dataclass, and compares after it
        setattr(mine, cls._FIELDS[0], 1)
        setattr(theirs, cls._FIELDS[0], 1)
        assert repr(mine) == repr(theirs)
        assert mine == cls(1, *values[1:])
        return
    # frozen, with the dataclass's errors and messages
    for action in (
        lambda obj: setattr(obj, cls._FIELDS[0], 1),
        lambda obj: setattr(obj, "not_a_field", 1),
        lambda obj: delattr(obj, cls._FIELDS[0]),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError) as mine_error:
            action(mine)
        with pytest.raises(dataclasses.FrozenInstanceError) as their_error:
            action(theirs)
        assert str(mine_error.value) == str(their_error.value)
    assert [getattr(mine, name) for name in cls._FIELDS] == values
