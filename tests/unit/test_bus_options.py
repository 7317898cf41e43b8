"""parse_options: the one way every method reads an ``a{sv}`` of options."""

import pytest

from livefw.bus.backend import Variant
from livefw.bus.context import parse_options
from livefw.errors import InvalidArgument, InvalidFile

ALLOWED = {"limit": "u", "device-id": "s", "force": "b"}


def test_known_keys_of_their_type_are_unwrapped() -> None:
    options = {"limit": Variant("u", 5), "force": Variant("b", True)}
    assert parse_options(options, ALLOWED) == {"limit": 5, "force": True}
    assert parse_options({}, ALLOWED) == {}


def test_unknown_keys_are_refused_naming_them_and_what_is_allowed() -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_options({"colour": Variant("s", "red")}, ALLOWED)
    assert raised.value.message == (
        "unknown options ['colour']; allowed: ['device-id', 'force', 'limit']"
    )


@pytest.mark.parametrize(
    ("variant", "got"),
    [
        (Variant("s", "5"), "'s'"),
        (Variant("t", 5), "'t'"),
        (Variant("v", Variant("u", 5)), "'v'"),
        (Variant("au", [5]), "'au'"),
    ],
)
def test_a_value_of_another_type_is_refused(variant: Variant, got: str) -> None:
    with pytest.raises(InvalidArgument, match=f"option 'limit' must be of type 'u', not {got}"):
        parse_options({"limit": variant}, ALLOWED)


def test_the_error_class_is_the_callers() -> None:
    with pytest.raises(InvalidFile, match="unknown options"):
        parse_options({"x": Variant("b", True)}, ALLOWED, InvalidFile)
    with pytest.raises(InvalidFile, match="must be of type 'b'"):
        parse_options({"force": Variant("s", "yes")}, ALLOWED, InvalidFile)


def test_ignore_unknown_leaves_unknown_keys_out_but_checks_known_ones() -> None:
    options = {"reason": Variant("s", "user-action"), "force": Variant("b", False)}
    assert parse_options(options, ALLOWED, ignore_unknown=True) == {"force": False}
    with pytest.raises(InvalidArgument, match="must be of type 'b'"):
        parse_options({"force": Variant("u", 1)}, ALLOWED, ignore_unknown=True)


def test_require_any_refuses_an_empty_setter() -> None:
    with pytest.raises(InvalidArgument, match=r"no option given; allowed: \['device-id'"):
        parse_options({}, ALLOWED, require_any=True)
    assert parse_options({"force": Variant("b", True)}, ALLOWED, require_any=True) == {
        "force": True
    }


def test_a_refusal_stays_short_whatever_the_caller_sends() -> None:
    options = {f"{index:05d}" + "k" * 10_000: Variant("b", True) for index in range(5_000)}
    with pytest.raises(InvalidArgument) as raised:
        parse_options(options, ALLOWED)
    assert len(raised.value.message) < 1_000
    assert "and 4992 more" in raised.value.message


def test_fwupd_install_ignores_unknown_options_and_refuses_mistyped_known_ones() -> None:
    from livefw.bus.fwupd_map import INSTALL_ALLOW_OLDER, install_options

    options = {
        "install-flags": Variant("t", INSTALL_ALLOW_OLDER),
        "filename": Variant("s", "/tmp/dir/firmware.cab"),
        "option-of-a-newer-fwupd": Variant("as", ["x"]),
    }
    parsed, name = install_options(options)
    assert (parsed.allow_older, parsed.allow_reinstall, name) == (True, False, "firmware.cab")
    with pytest.raises(InvalidFile, match="option 'install-flags' must be of type 't'"):
        install_options({"install-flags": Variant("u", 1)})
