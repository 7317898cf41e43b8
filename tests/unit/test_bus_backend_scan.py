"""The backend's fd scan answers exactly like the library's, and the library uses it."""

import importlib
from typing import Any

import pytest

from livefw.bus import dbuslib
from livefw.bus.dbuslib import Variant

CASES: list[tuple[str, list[Any], bool]] = [
    ("", [], False),
    ("s", ["x"], False),
    ("h", [3], True),
    ("ash", [["a"], 1], True),
    ("a(sh)", [[["a", 1]]], True),
    ("a{sv}", [{"a": Variant("s", "x"), "b": Variant("u", 1)}], False),
    ("a{sv}", [{"fd": Variant("h", 0)}], True),
    ("aa{sv}", [[{"a": Variant("as", ["x"])}, {"b": Variant("t", 2)}]], False),
    ("aa{sv}", [[{"a": Variant("s", "x")}, {"fd": Variant("ah", [0, 1])}]], True),
    # a variant inside a variant inside a dict inside a list
    ("av", [[Variant("v", Variant("a{sv}", {"x": Variant("h", 0)}))]], True),
    ("av", [[Variant("v", Variant("a{sv}", {"x": Variant("s", "h")}))]], False),
    ("v", [Variant("(sv)", ["h", Variant("s", "h")])], False),
    ("v", [Variant("(sv)", ["x", Variant("(ih)", [1, 2])])], True),
    ("a{sa{sv}}", [{"i": {"p": Variant("a{sv}", {"q": Variant("b", True)})}}], False),
]


@pytest.mark.parametrize(("signature", "body", "expected"), CASES)
def test_the_scan_matches_the_library(signature: str, body: list[Any], expected: bool) -> None:
    library = dbuslib._library_contains_type
    assert library is not None
    assert library(signature, body, "h") is expected
    assert dbuslib._contains_type(signature, body, "h") is expected


def test_the_library_service_code_uses_the_fast_scan() -> None:
    package = "dbus_next" if dbuslib.BACKEND == "next" else "dbus_fast"
    for name in (f"{package}.service", f"{package}._private.util"):
        assert importlib.import_module(name).signature_contains_type is dbuslib._contains_type


def test_marshal_gives_the_wire_bytes_with_either_library() -> None:
    message = dbuslib.Message(destination="x.y", path="/x", interface="x.y", member="M")
    message.serial = 7
    data = dbuslib.marshal(message)
    assert data[:1] == b"l"  # little-endian
    assert data[1] == 1  # METHOD_CALL
    assert int.from_bytes(data[8:12], "little") == 7  # serial
