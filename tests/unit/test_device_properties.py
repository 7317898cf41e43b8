"""One property table drives the model, DeviceInfo, the D-Bus getters and the CLI."""

import re
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from mypy import api as mypy_api

from livefw.bus.backend import Variant
from livefw.bus.device import DeviceInterface, device_dict
from livefw.cli.main import DEVICE_FIELDS
from livefw.device import Device, DeviceInfo
from livefw.device_properties import (
    BY_WIRE,
    PROPERTIES,
    REQUIRED,
    DeviceChanges,
    DeviceInit,
    cli_fields,
)
from livefw.errors import Internal
from livefw.sanitize import NAME_MAX, TEXT_MAX
from livefw.state import Status, UpdateState

XML = Path(__file__).resolve().parents[2] / "dbus" / "org.livefw.Daemon1.Device.xml"

#: GetDevices' a{sv} as it was before the table: names, signatures, order.
WIRE = [
    ("Id", "s"),
    ("Name", "s"),
    ("Vendor", "s"),
    ("Summary", "s"),
    ("Plugin", "s"),
    ("Protocol", "s"),
    ("PhysicalId", "s"),
    ("Guids", "as"),
    ("Version", "s"),
    ("VersionLowest", "s"),
    ("VersionPending", "s"),
    ("Flags", "as"),
    ("UpdateState", "s"),
    ("UpdateError", "s"),
    ("Status", "s"),
    ("Percentage", "u"),
    ("Metadata", "a{ss}"),
]


def _device() -> Device:
    device = Device(
        "lfa",
        "sys/firmware/lfa/x",
        name="Image\x1b",
        vendor="Arm",
        summary="s" * 5000,
        guids=["B-GUID", "a-guid"],
        version="1",
        version_lowest="0",
        flags=["updatable", "needs-activation"],
        metadata={"k": "v"},
    )
    device.update(version_pending="2", update_state="pending", percentage=40, status="loading")
    return device


def test_get_devices_dict_is_unchanged_on_the_wire() -> None:
    result = device_dict(_device())
    assert [(name, variant.signature) for name, variant in result.items()] == WIRE
    assert result["Flags"].value == ["needs-activation", "updatable"]
    assert result["Guids"].value == ["B-GUID", "a-guid"]
    assert result["UpdateState"].value == "pending"
    assert result["Status"].value == "loading"
    assert result["Percentage"].value == 40
    assert result["Name"].value == "Image\\x1b"


def test_introspection_matches_the_published_xml() -> None:
    expected = [
        (prop.get("name"), prop.get("type"), prop.get("access"))
        for prop in ET.parse(XML).getroot().iter("property")
    ]
    node = DeviceInterface(_device()).introspect()
    got = [(prop.name, prop.signature, prop.access.value) for prop in node.properties]
    assert sorted(got) == sorted(expected)
    assert len(got) == len(PROPERTIES)


def test_each_getter_returns_its_rows_wire_value() -> None:
    device = _device()
    interface = DeviceInterface(device)
    for name, variant in device_dict(device).items():
        assert getattr(interface, name) == variant.value, name
        Variant(variant.signature, getattr(interface, name))  # marshals as declared


def test_properties_changed_carries_wire_names_and_values() -> None:
    device = _device()
    interface = DeviceInterface(device)
    emitted: list[dict[str, Any]] = []
    interface.emit_properties_changed = emitted.append  # type: ignore[method-assign]
    device.add_listener(lambda _device, names: interface.changed(names))
    device.update(flags=["b", "a"], update_error="bad\nthing", percentage=7)
    assert emitted == [{"Flags": ["a", "b"], "UpdateError": "bad\\nthing", "Percentage": 7}]
    device.update(percentage=7)
    assert len(emitted) == 1


def test_device_info_has_one_field_per_row_in_wire_form() -> None:
    assert list(DeviceInfo.model_fields) == [prop.attribute for prop in PROPERTIES]
    info = _device().info()
    assert info.flags == ("needs-activation", "updatable")
    assert info.update_state == "pending"
    assert info.status == "loading"
    assert info.metadata == {"k": "v"}
    with pytest.raises(ValueError, match="frozen"):
        info.name = "other"  # type: ignore[misc]


def test_the_model_takes_its_types_and_limits_from_the_table() -> None:
    device = _device()
    assert device.flags == frozenset({"updatable", "needs-activation"})
    assert device.guids == ("B-GUID", "a-guid")
    assert device.update_state is UpdateState.PENDING
    assert device.status is Status.LOADING
    assert len(device.summary) == TEXT_MAX == BY_WIRE["Summary"].limit
    assert BY_WIRE["Name"].limit == NAME_MAX
    assert BY_WIRE["PhysicalId"].limit is None
    assert (device.update_error, device.percentage, device.vendor) == ("", 40, "Arm")


def test_the_constructor_and_update_take_only_their_rows() -> None:
    with pytest.raises(TypeError, match="colour"):
        Device("p", "x", name="n", colour="red")
    with pytest.raises(TypeError, match="update_state"):
        Device("p", "x", name="n", update_state="pending")  # only through update()
    with pytest.raises(TypeError, match="needs its name"):
        Device("p", "x")
    device = Device("p", "x", name="n")
    for fixed in ("id", "plugin", "physical_id"):
        with pytest.raises(TypeError, match=fixed):
            device.update(**{fixed: "other"})


def test_update_state_changes_go_through_the_transition_table() -> None:
    device = Device("p", "x", name="n")
    device.update(update_state="pending")
    with pytest.raises(Internal, match="cannot go from pending to needs-reboot"):
        device.update(update_state="needs-reboot")
    assert device.update_state is UpdateState.PENDING


def test_cli_prints_the_labelled_rows_in_rank_order() -> None:
    assert cli_fields() == DEVICE_FIELDS
    assert DEVICE_FIELDS == (
        ("Id", "Id"),
        ("Name", "Name"),
        ("Vendor", "Vendor"),
        ("Plugin", "Plugin"),
        ("Protocol", "Protocol"),
        ("Version", "Version"),
        ("VersionPending", "Pending version"),
        ("VersionLowest", "Lowest version"),
        ("Guids", "GUIDs"),
        ("Flags", "Flags"),
        ("UpdateState", "Update state"),
        ("UpdateError", "Update error"),
        ("Summary", "Summary"),
    )


def test_percentage_stays_in_range_of_its_signature() -> None:
    device = Device("p", "x", name="n")
    device.update(percentage=-5)
    assert device.percentage == 0
    device.update(percentage=250.0)
    assert device.percentage == 100
    Variant("u", device_dict(device)["Percentage"].value)


def test_the_typed_keywords_mirror_the_table() -> None:
    """DeviceInit/DeviceChanges are what mypy reads: the same names, types, required ones."""
    init = {prop.attribute: prop.accepts for prop in PROPERTIES if prop.init}
    settable = {prop.attribute: prop.accepts for prop in PROPERTIES if prop.settable}
    assert get_type_hints(DeviceInit) == init
    assert get_type_hints(DeviceChanges) == settable
    required = {prop.attribute for prop in PROPERTIES if prop.init and prop.default is REQUIRED}
    assert DeviceInit.__required_keys__ == required == {"name"}
    assert DeviceChanges.__required_keys__ == frozenset()


#: calls mypy must accept, and calls it must refuse (marked ``# refused: <words>``).
TYPED_CALLS = """
    from livefw.device import Device
    from livefw.state import Status, UpdateState

    device = Device("p", "x", name="n", flags=("a",), guids=["g"], metadata={"k": "v"})
    device.update(update_state=UpdateState.PENDING, percentage=3, flags=device.flags | {"b"})
    device.update(status=Status.LOADING, version="2", name="m")
    Device("p", "x", name="n", colour="red")  # refused: Unexpected keyword argument "colour"
    Device("p", "x", name="n", flags="updatable")  # refused: "flags" to "Device"
    Device("p", "x", vendor="v")  # refused: Missing named argument "name"
    Device("p", "x", name=3)  # refused: "name" to "Device"
    Device("p", "x", name="n", update_state=UpdateState.NONE)  # refused: "update_state"
    device.update(percentage="3")  # refused: "percentage" to "update"
    device.update(update_state="pending")  # refused: "update_state" to "update"
    device.update(plugin="other")  # refused: Unexpected keyword argument "plugin"
    device.update(metadata={"k": 1})  # refused: Dict entry 0 has incompatible type
"""


def test_mypy_refuses_a_wrong_property_keyword_or_type(tmp_path: Path) -> None:
    source = tmp_path / "calls.py"
    source.write_text(textwrap.dedent(TYPED_CALLS))
    stdout, stderr, _status = mypy_api.run(
        ["--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"), str(source)]
    )
    errors: dict[int, str] = {}
    for line in stdout.splitlines():
        found = re.match(r".*calls\.py:(\d+): error: (.*)", line)
        if found:
            errors[int(found.group(1))] = errors.get(int(found.group(1)), "") + found.group(2)
    expected = {
        number: line.split("# refused: ")[1]
        for number, line in enumerate(source.read_text().splitlines(), start=1)
        if "# refused: " in line
    }
    assert sorted(errors) == sorted(expected), stdout + stderr
    for number, words in expected.items():
        assert words in errors[number], (number, errors[number])
