"""Session object paths: escaped like sd_bus_path_encode, reversible, always valid."""

import re

import pytest

from livefw.bus.ext_liveupdate import SESSIONS_PATH, path_decode, path_encode, session_path

_ELEMENT = re.compile(r"[A-Za-z0-9_]+")


@pytest.mark.parametrize(
    ("label", "element"),
    [
        ("", "_"),
        ("abc", "abc"),
        ("livefw.1000.vm", "livefw_2e1000_2evm"),
        ("1abc", "_31abc"),  # a leading digit is escaped too
        ("a-b_c", "a_2db_5fc"),
    ],
)
def test_encoding(label: str, element: str) -> None:
    assert path_encode(label) == element
    assert path_decode(element) == label


@pytest.mark.parametrize("label", ["livefw.4294967295." + "x" * 45, "é/ü", "a b\tc"])
def test_round_trip_and_validity(label: str) -> None:
    element = path_encode(label)
    assert _ELEMENT.fullmatch(element)
    assert path_decode(element) == label
    assert session_path(label) == f"{SESSIONS_PATH}/{element}"
