"""The properties of a device, declared once.

As systemd's timedated declares its D-Bus properties in one vtable, each property of a
:class:`livefw.device.Device` is one row here (a :class:`DeviceProperty` on
:class:`DeviceProperties`, the base of ``Device``), and everything else is derived
from the rows:

- the model: the attribute and its Python type, the type a plugin passes
  (``accepts``), how a value is converted and sanitised on the way in
  (:func:`livefw.sanitize.clean` with the row's ``limit``), whether the constructor
  and :meth:`Device.update` accept it, the state check;
- the keyword types mypy checks at every ``Device(...)`` and ``update(...)`` call:
  :class:`DeviceInit` and :class:`DeviceChanges` mirror the rows (a type checker
  cannot read a table built at run time), and tests/unit/test_device_properties.py
  fails when a name, a type or the required ones disagree with the table;
- ``DeviceInfo``, the frozen snapshot (one field per row, in its wire form);
- ``org.livefw.Daemon1.Device``: the D-Bus name, signature and wire form of each
  getter, the ``PropertiesChanged`` values and the ``a{sv}`` of ``GetDevices``
  (in :data:`PROPERTIES` order);
- the CLI: the rows with a ``label`` are the lines of ``livefw get-device``, in
  ``rank`` order.

This module imports nothing heavy, so the CLI reads the table without the daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Generic, TypedDict, TypeVar, overload

from livefw.sanitize import NAME_MAX, TEXT_MAX, clean
from livefw.state import Status, UpdateState, transition

__all__ = [
    "BY_ATTRIBUTE",
    "BY_WIRE",
    "METADATA_MAX",
    "PROPERTIES",
    "REQUIRED",
    "DeviceChanges",
    "DeviceInit",
    "DeviceProperties",
    "DeviceProperty",
    "Strings",
    "cli_fields",
]

T = TypeVar("T")

#: the default of a property the constructor must be given.
REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()

#: at most this many metadata entries are kept (firmware decides how many it reports).
METADATA_MAX = 64
#: a metadata key's length cap.
METADATA_KEY_MAX = 64


#: what ``guids`` and ``flags`` take: a collection of strings, but not a bare ``str``
#: (one too, which would become one entry per character).
Strings = tuple[str, ...] | list[str] | AbstractSet[str]


def _same(value: Any) -> Any:
    return value


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _string_set(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


def _percent(value: Any) -> int:
    # a D-Bus ``u`` cannot carry a negative number: out of range would fail every reply
    # that includes the device, so it is clamped here, as Operation.progress does
    return max(0, min(100, int(value)))


def _clean_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    items = list(metadata.items())[:METADATA_MAX]
    return {clean(key, METADATA_KEY_MAX): clean(value, TEXT_MAX) for key, value in items}


class DeviceProperty(Generic[T]):
    """One row of the table, and the class attribute ``Device.<attribute>``.

    It is a non-data descriptor: a device keeps its values in its own ``__dict__``
    (set by the constructor and :meth:`Device.update` only), so reading one costs
    what reading a plain attribute does; the descriptor is what the class, and
    type checkers, see.

    Attributes:
        attribute: the Python name (``version_pending``), from the class body.
        wire: the D-Bus property name (``VersionPending``).
        signature: its D-Bus signature (``s``, ``as``, ``u``, ``a{ss}``).
        convert: makes the Python value (of type ``T``) from what a plugin passes:
            the type and, for text, the sanitiser.
        accepts: the type of what a plugin passes (the constructor's and
            :meth:`Device.update`'s keyword): the row's type in :class:`DeviceInit`
            and :class:`DeviceChanges`.
        limit: the sanitiser's length cap for text, else None.
        to_wire: the Python value -> the value sent on the bus.
        default: the value when the constructor is not given one (:data:`REQUIRED`:
            it must be), converted like a given one.
        init: the constructor takes it as a keyword.
        settable: :meth:`Device.update` takes it (the Id, plugin and physical Id
            never change).
        check: ``check(current, new) -> new`` raises on a change not allowed (the
            update state's transition table).
        label: the line's name in ``livefw get-device``; empty: not shown.
        rank: the line's position there.
    """

    attribute: str

    def __init__(
        self,
        wire: str,
        signature: str,
        convert: Callable[[Any], T],
        *,
        accepts: Any,
        limit: int | None = None,
        to_wire: Callable[[T], Any] = _same,
        default: Any = REQUIRED,
        init: bool = True,
        settable: bool = True,
        check: Callable[[T, T], T] | None = None,
        label: str = "",
        rank: int = 0,
    ) -> None:
        self.wire = wire
        self.signature = signature
        self.convert = convert
        self.accepts = accepts
        self.limit = limit
        self.to_wire = to_wire
        self.default = default
        self.init = init
        self.settable = settable
        self.check = check
        self.label = label
        self.rank = rank

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.attribute = name

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> DeviceProperty[T]: ...

    @overload
    def __get__(self, instance: object, owner: type[Any]) -> T: ...

    def __get__(self, instance: object | None, owner: type[Any]) -> DeviceProperty[T] | T:
        if instance is None:
            return self
        # only reached when the instance has no value: a subclass that did not call
        # Device.__init__
        raise AttributeError(f"{type(instance).__name__} has no {self.attribute} yet")

    def value(self, current: Any, raw: Any) -> T:
        """``raw`` converted and checked against the ``current`` value."""
        value = self.convert(raw)
        if self.check is not None:
            value = self.check(current, value)
        return value

    def wire_value(self, device: object) -> Any:
        """The value of this property of ``device`` as it goes on the bus."""
        return self.to_wire(getattr(device, self.attribute))

    def __repr__(self) -> str:
        return f"DeviceProperty({self.attribute!r}, {self.wire!r}, {self.signature!r})"


def _text(
    wire: str,
    limit: int,
    *,
    default: Any = "",
    init: bool = True,
    label: str = "",
    rank: int = 0,
) -> DeviceProperty[str]:
    """A line of text from firmware, sanitised to at most ``limit`` characters."""
    return DeviceProperty(
        wire,
        "s",
        lambda value: clean(value, limit),
        accepts=str,
        limit=limit,
        default=default,
        init=init,
        label=label,
        rank=rank,
    )


def _fixed(wire: str, *, label: str = "", rank: int = 0) -> DeviceProperty[str]:
    """Set once by the constructor from its arguments, never changed."""
    return DeviceProperty(
        wire, "s", str, accepts=str, init=False, settable=False, label=label, rank=rank
    )


class DeviceProperties:
    """The table: one row per property, in the order of ``GetDevices``' ``a{sv}``."""

    id = _fixed("Id", label="Id", rank=1)
    name = _text("Name", NAME_MAX, label="Name", rank=2, default=REQUIRED)
    vendor = _text("Vendor", NAME_MAX, label="Vendor", rank=3)
    summary = _text("Summary", TEXT_MAX, label="Summary", rank=13)
    plugin = _fixed("Plugin", label="Plugin", rank=4)
    protocol = _text("Protocol", NAME_MAX, label="Protocol", rank=5)
    # a kernel key (a sysfs directory, a GUID): plugins address the kernel with it,
    # so it is kept as it is
    physical_id = _fixed("PhysicalId")
    guids = DeviceProperty(
        "Guids", "as", _strings, accepts=Strings, to_wire=list, default=(), label="GUIDs", rank=9
    )
    version = _text("Version", NAME_MAX, label="Version", rank=6)
    version_lowest = _text("VersionLowest", NAME_MAX, label="Lowest version", rank=8)
    version_pending = _text("VersionPending", NAME_MAX, label="Pending version", rank=7)
    flags = DeviceProperty(
        "Flags",
        "as",
        _string_set,
        accepts=Strings,
        to_wire=sorted,
        default=(),
        label="Flags",
        rank=10,
    )
    update_state = DeviceProperty(
        "UpdateState",
        "s",
        UpdateState,
        accepts=UpdateState,
        to_wire=str,
        default=UpdateState.NONE,
        init=False,
        check=transition,
        label="Update state",
        rank=11,
    )
    update_error = _text("UpdateError", TEXT_MAX, init=False, label="Update error", rank=12)
    status = DeviceProperty(
        "Status", "s", Status, accepts=Status, to_wire=str, default=Status.IDLE, init=False
    )
    percentage = DeviceProperty("Percentage", "u", _percent, accepts=int, default=0, init=False)
    metadata = DeviceProperty(
        "Metadata",
        "a{ss}",
        _clean_metadata,
        accepts=Mapping[str, str],
        to_wire=dict,
        default={},
    )


#: every row, in declaration (wire) order.
PROPERTIES: tuple[DeviceProperty[Any], ...] = tuple(
    value for value in vars(DeviceProperties).values() if isinstance(value, DeviceProperty)
)
#: attribute name -> row.
BY_ATTRIBUTE: dict[str, DeviceProperty[Any]] = {prop.attribute: prop for prop in PROPERTIES}
#: D-Bus property name -> row.
BY_WIRE: dict[str, DeviceProperty[Any]] = {prop.wire: prop for prop in PROPERTIES}


class _Described(TypedDict, total=False):
    """The rows both the constructor and :meth:`Device.update` take (bar ``name``)."""

    vendor: str
    summary: str
    protocol: str
    guids: Strings
    version: str
    version_lowest: str
    version_pending: str
    flags: Strings
    metadata: Mapping[str, str]


class _Named(TypedDict):
    """The rows the constructor must be given (default :data:`REQUIRED`).

    A total TypedDict rather than ``Required[...]``: Python 3.11 does not see
    ``Required`` in a postponed (string) annotation and would call it optional.
    """

    name: str


class DeviceInit(_Named, _Described):
    """``Device(plugin, physical_id, **properties)``: the rows marked ``init``.

    ``name`` is required, the others are optional. The table is the declaration; this
    mirrors it for type checkers, and tests/unit/test_device_properties.py checks that
    both agree.
    """


class DeviceChanges(_Described, total=False):
    """``Device.update(**changes)``: the rows marked ``settable``, all optional."""

    name: str
    update_state: UpdateState
    update_error: str
    status: Status
    percentage: int


def cli_fields() -> tuple[tuple[str, str], ...]:
    """``(D-Bus name, label)`` of the lines ``livefw get-device`` prints, in order."""
    shown = sorted((prop for prop in PROPERTIES if prop.label), key=lambda prop: prop.rank)
    return tuple((prop.wire, prop.label) for prop in shown)
