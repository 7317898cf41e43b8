"""Golden values of the LUO uAPI (include/uapi/linux/liveupdate.h): numbers and sizes as gcc
lays them out on x86-64 (the _IO(0xBA, nr) requests and the structs' sizeof)."""

import pytest

from livefw.kernel.uapi import liveupdate as uapi


def test_ioctl_numbers_match_the_header() -> None:
    assert uapi.LIVEUPDATE_IOCTL_CREATE_SESSION == 0x0000BA00
    assert uapi.LIVEUPDATE_IOCTL_RETRIEVE_SESSION == 0x0000BA01
    assert uapi.LIVEUPDATE_SESSION_PRESERVE_FD == 0x0000BA40
    assert uapi.LIVEUPDATE_SESSION_RETRIEVE_FD == 0x0000BA41
    assert uapi.LIVEUPDATE_SESSION_FINISH == 0x0000BA42
    assert uapi.LIVEUPDATE_SESSION_GET_NAME == 0x0000BA43


def test_struct_sizes_match_the_header() -> None:
    assert uapi.CREATE_SESSION.size == 72
    assert uapi.RETRIEVE_SESSION.size == 72
    assert uapi.PRESERVE_FD.size == 16
    assert uapi.RETRIEVE_FD.size == 16
    assert uapi.FINISH.size == 8
    assert uapi.GET_NAME.size == 72
    assert uapi.LIVEUPDATE_SESSION_NAME_LENGTH == 64


def test_only_the_merged_api_is_defined() -> None:
    names = [name for name in dir(uapi) if name.startswith("LIVEUPDATE_")]
    assert not [n for n in names if "UNPRESERVE" in n or "STATE" in n or "EVENT" in n]
    assert not [n for n in names if "PREPARE" in n or "CANCEL" in n or "RESTORE" in n]


def test_struct_layouts() -> None:
    arg = uapi.pack_preserve_fd(5, 0x1122334455667788)
    assert bytes(arg) == bytes.fromhex("10000000050000008877665544332211")
    arg = uapi.pack_create_session("vm")
    assert len(arg) == 72
    assert bytes(arg[:8]) == bytes.fromhex("48000000ffffffff")
    assert bytes(arg[8:11]) == b"vm\x00"
    assert bytes(uapi.pack_finish()) == bytes.fromhex("0800000000000000")
    assert uapi.decode_name(b"abc\x00def" + bytes(57)) == "abc"


@pytest.mark.parametrize("name", ["", "x" * 64, "a\x00b"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="1 to 63"):
        uapi.encode_name(name)


def test_longest_name_fits() -> None:
    assert uapi.encode_name("x" * 63) == b"x" * 63
