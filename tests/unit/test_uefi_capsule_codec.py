"""UEFI codecs: golden bytes built by hand and hypothesis round trips.

The layouts come from include/linux/efi.h, UEFI 2.10 §3.1.3 (EFI_LOAD_OPTION), §10.3
(device path nodes), §8.5.3 (EFI_CAPSULE_HEADER) and fwupd-efi's efi/fwup-efi.h
(UPDATE_INFO); docs/kernel.md lists the kernel side.
"""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livefw.kernel.uapi import capsule as cap
from livefw.kernel.uapi import efi

PARTUUID = "5f2d2c4a-9e2b-4c1f-a0b2-6a3f0e7d1c11"
PARTUUID_EFI = bytes.fromhex("4a2c2d5f2b9e1f4ca0b26a3f0e7d1c11")
SYSTEM = "ddc0ee61-e7f0-4e7d-acc5-c070a398838e"
SYSTEM_EFI = bytes.fromhex("61eec0ddf0e77d4eacc5c070a398838e")

HD_NODE = (
    bytes.fromhex("04012a00")  # media / hard drive, 42 bytes
    + bytes.fromhex("01000000")  # partition 1
    + bytes.fromhex("0008000000000000")  # start LBA 2048
    + bytes.fromhex("0000100000000000")  # 1048576 sectors
    + PARTUUID_EFI
    + b"\x02\x02"  # GPT, GUID signature
)
LOADER_PATH = "\\EFI\\debian\\fwupdx64.efi"  # 24 characters
FILE_NODE = bytes.fromhex("04043600") + "".join(c + "\0" for c in LOADER_PATH).encode() + b"\0\0"
END = bytes.fromhex("7fff0400")

#: no wall-clock bound per example: on a loaded 2-core machine one example can take
#: longer than hypothesis' default 200 ms without anything being wrong.
_NO_DEADLINE = settings(deadline=None)


def test_struct_sizes_match_the_spec() -> None:
    assert efi.DP_HARD_DRIVE.size == 42
    assert efi.UPDATE_INFO_HEADER.size == 52
    assert efi.EFI_TIME.size == 16
    assert efi.LOAD_OPTION_HEADER.size == 6
    assert efi.CAPSULE_RESULT_HEADER.size == 48
    assert efi.FMP_PAYLOAD_HEADER.size == 16
    assert cap.CAPSULE_HEADER.size == 28
    assert len(FILE_NODE) == 0x36


def test_load_option_golden() -> None:
    option = efi.LoadOption(
        efi.LOAD_OPTION_ACTIVE,
        "Linux Firmware Updater",
        [
            efi.HardDriveNode(1, 2048, 1048576, PARTUUID),
            efi.FilePathNode(LOADER_PATH),
        ],
    )
    description = "".join(c + "\0" for c in "Linux Firmware Updater").encode() + b"\0\0"
    expected = b"\x01\x00\x00\x00" + b"\x64\x00" + description + HD_NODE + FILE_NODE + END
    assert option.pack() == expected
    assert efi.LoadOption.unpack(expected) == option
    assert efi.validate_global_var("Boot0003", expected)


def test_update_info_golden() -> None:
    info = efi.UpdateInfo(
        guid=SYSTEM,
        capsule_flags=0x8010,
        device_path=[
            efi.HardDriveNode(1, 2048, 1048576, PARTUUID),
            efi.FilePathNode(LOADER_PATH),
        ],
    )
    expected = (
        b"\x07\x00\x00\x00"
        + SYSTEM_EFI
        + b"\x10\x80\x00\x00"
        + bytes(8)
        + bytes(16)
        + b"\x01\x00\x00\x00"
        + HD_NODE
        + FILE_NODE
        + END
    )
    assert info.pack() == expected
    decoded = efi.UpdateInfo.unpack(expected)
    assert decoded == info
    assert decoded.file_path() == LOADER_PATH


def test_update_info_validation_like_fwupd_efi() -> None:
    header = efi.UPDATE_INFO_HEADER.pack(7, SYSTEM_EFI, 0, 0, bytes(16), 1)
    with pytest.raises(ValueError, match="too small"):
        efi.UpdateInfo.unpack(header + END)  # 56 bytes
    with pytest.raises(ValueError, match="too small"):
        efi.UpdateInfo.unpack(header + END + END)  # 60 bytes, not more
    with pytest.raises(ValueError, match="without an End node"):
        efi.UpdateInfo.unpack(header + FILE_NODE)
    with pytest.raises(ValueError, match=r"bad length|after its End"):
        efi.UpdateInfo.unpack(header + FILE_NODE + END + b"\0")


def test_efivarfs_content_and_names() -> None:
    assert efi.encode_var(7, b"\x03\x00") == bytes.fromhex("070000000300")
    assert efi.decode_var(bytes.fromhex("070000000300")) == (7, b"\x03\x00")
    with pytest.raises(ValueError, match="at least 4 bytes"):
        efi.decode_var(b"\x07\x00")
    assert (
        efi.var_filename("BootNext", efi.EFI_GLOBAL_VARIABLE_GUID.upper())
        == "BootNext-8be4df61-93ca-11d2-aa0d-00e098032b8c"
    )
    assert efi.parse_var_filename("fwupd-" + SYSTEM + "-0-" + efi.FWUPDATE_GUID) == (
        f"fwupd-{SYSTEM}-0",
        efi.FWUPDATE_GUID,
    )
    assert efi.boot_var_name(0x1A) == "Boot001A"
    assert efi.parse_boot_var_name("Boot001A") == 0x1A
    assert efi.parse_boot_var_name("BootNext") is None
    assert efi.parse_boot_var_name("Boot001a") is None


@pytest.mark.parametrize(
    ("name", "guid", "mutable"),
    [
        ("BootNext", efi.EFI_GLOBAL_VARIABLE_GUID, True),
        ("Boot0003", efi.EFI_GLOBAL_VARIABLE_GUID, True),
        ("OsIndications", efi.EFI_GLOBAL_VARIABLE_GUID, True),
        ("OsIndicationsSupported", efi.EFI_GLOBAL_VARIABLE_GUID, False),
        ("SecureBoot", efi.EFI_GLOBAL_VARIABLE_GUID, False),
        (f"fwupd-{SYSTEM}-0", efi.FWUPDATE_GUID, False),
        ("dump-type0-1", efi.LINUX_EFI_CRASH_GUID, True),
    ],
)
def test_immutable_whitelist(name: str, guid: str, mutable: bool) -> None:
    assert efi.var_is_mutable_by_default(name, guid) is mutable


def test_global_validation_table() -> None:
    assert efi.validate_global_var("BootNext", b"\x01\x00")
    assert not efi.validate_global_var("BootNext", b"")
    assert not efi.validate_global_var("BootNext", b"\x01\x00\x00")
    assert efi.validate_global_var("BootOrder", b"")
    assert not efi.validate_global_var("BootOrder", b"\x01")
    assert not efi.validate_global_var("Boot0001", b"")
    assert not efi.validate_global_var("Boot0001", b"\x01\x00\x00\x00\x04\x00A\x00")
    assert efi.validate_global_var("Lang", b"eng")
    assert not efi.validate_global_var("Lang", "é".encode())


def test_esrt_entry_golden() -> None:
    entry = efi.EsrtEntry(SYSTEM, 1, 65586, 65536, 0x8010, 65585, 3)
    assert entry.render() == {
        "fw_class": SYSTEM + "\n",
        "fw_type": "1\n",
        "fw_version": "65586\n",
        "lowest_supported_fw_version": "65536\n",
        "capsule_flags": "0x8010\n",
        "last_attempt_version": "65585\n",
        "last_attempt_status": "3\n",
    }
    assert efi.describe_last_attempt_status(3) == "incorrect version"
    assert efi.describe_last_attempt_status(1) == "unsuccessful"
    assert efi.describe_last_attempt_status(0x1001).startswith("vendor-specific")
    assert efi.last_attempt_transient(6)
    assert efi.last_attempt_transient(7)
    assert not efi.last_attempt_transient(5)


def test_capsule_status_mapping_masks_the_error_bit() -> None:
    assert efi.efi_status_to_last_attempt(0) == 0
    assert efi.efi_status_to_last_attempt(0x8000000000000009) == 2
    assert efi.efi_status_to_last_attempt(0x8000000000000019) == 3
    assert efi.efi_status_to_last_attempt(0x8000000000000003) == 4
    assert efi.efi_status_to_last_attempt(0x800000000000001A) == 5
    assert efi.efi_status_to_last_attempt(0x8000000000000007) == 1


def test_efi_time_and_capsule_result_golden() -> None:
    stamp = efi.EfiTime(2026, 11, 23, 12, 5, 9, 0, 0x7FF, 0)
    assert stamp.pack() == bytes.fromhex("ea070b17 0c0509 00 00000000 ff07 00 00".replace(" ", ""))
    result = efi.CapsuleResult(cap.FMP_CAPSULE_GUID, stamp, 0x8000000000000009)
    raw = result.pack()
    assert raw[:8] == b"\x30\x00\x00\x00\x00\x00\x00\x00"
    assert raw[8:24] == bytes.fromhex("edd5cb6d2de8444cbda17194199ad92a")
    assert raw[40:48] == bytes.fromhex("0900000000000080")
    assert efi.CapsuleResult.unpack(raw) == result


def test_fmp_capsule_walk_golden() -> None:
    payload = struct.pack("<IIII", 0x3153534D, 16, 42, 30) + b"firmware"
    auth = cap.pack_image_auth(1, b"sig")
    image = auth + payload
    image_header = cap.pack_fmp_image_header(3, SYSTEM, len(image), capsule_support=1)
    fmp = struct.pack("<IHHQ", 1, 0, 1, 16)
    body = fmp + image_header + image
    capsule = (
        bytes.fromhex("edd5cb6d2de8444cbda17194199ad92a")
        + struct.pack("<III", 32, 0x50000, 32 + len(body))
        + bytes(4)
        + body
    )
    info = efi.inspect_capsule(capsule)
    assert info.fmp
    (found,) = info.images
    assert found.image_type == SYSTEM
    assert found.version == 42
    assert found.lowest == 30
    assert found.auth is not None
    assert found.auth.cert_data == b"sig"
    with pytest.raises(cap.CapsuleError):
        efi.inspect_capsule(capsule[:-4])
    bare = efi.inspect_capsule(payload)
    assert bare.header is None
    assert bare.images[0].version == 42
    # nothing is copied (issue 17.5: a 64 MiB capsule was copied twice per walk, and
    # walked again after every staging): each payload is a read-only view of the file
    for walked, source in ((found, capsule), (bare.images[0], payload)):
        assert isinstance(walked.payload, memoryview)
        assert walked.payload.obj is source
        assert walked.payload.readonly
    assert found.payload == payload


# ------------------------------------------------------------------ round trips

_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=40,
)
_guid = st.uuids().map(str)
_nodes = st.lists(
    st.one_of(
        st.builds(
            efi.HardDriveNode,
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**64 - 1),
            _guid,
            st.integers(0, 255),
            st.integers(0, 255),
        ),
        st.builds(efi.FilePathNode, _text),
        st.builds(
            efi.RawNode,
            st.sampled_from([0x01, 0x02, 0x03, 0x05]),
            st.integers(0, 255),
            st.binary(max_size=40),
        ),
    ),
    max_size=5,
)


@_NO_DEADLINE
@given(st.integers(0, 2**32 - 1), _text, _nodes, st.binary(max_size=40))
def test_load_option_round_trip(
    attributes: int, description: str, nodes: list[efi.DevicePathNode], optional: bytes
) -> None:
    option = efi.LoadOption(attributes, description, nodes, optional)
    assert efi.LoadOption.unpack(option.pack()) == option


_times = st.builds(
    efi.EfiTime,
    st.integers(0, 65535),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 2**32 - 1),
    st.integers(-(2**15), 2**15 - 1),
    st.integers(0, 255),
)


@_NO_DEADLINE
@given(
    _guid,
    st.integers(0, 2**32 - 1),
    _nodes.filter(lambda nodes: len(nodes) >= 1),
    st.integers(0, 2**64 - 1),
    _times,
    st.integers(0, 2**32 - 1),
)
def test_update_info_round_trip(
    guid: str,
    flags: int,
    nodes: list[efi.DevicePathNode],
    instance: int,
    stamp: efi.EfiTime,
    status: int,
) -> None:
    info = efi.UpdateInfo(guid, flags, nodes, instance, stamp, status)
    raw = info.pack()
    if len(raw) <= efi.UPDATE_INFO_MIN_EXCLUSIVE:
        with pytest.raises(ValueError, match="too small"):
            efi.UpdateInfo.unpack(raw)
    else:
        assert efi.UpdateInfo.unpack(raw) == info


@_NO_DEADLINE
@given(
    _guid,
    st.integers(0, 3),
    *(st.integers(0, 2**32 - 1) for _ in range(5)),
)
def test_esrt_entry_round_trip(
    guid: str, kind: int, version: int, lowest: int, flags: int, last: int, status: int
) -> None:
    entry = efi.EsrtEntry(guid, kind, version, lowest, flags, last, status)
    assert efi.EsrtEntry.parse(entry.render()) == entry


@_NO_DEADLINE
@given(st.integers(0, 0x7F), st.binary(max_size=64))
def test_var_round_trip(attributes: int, data: bytes) -> None:
    assert efi.decode_var(efi.encode_var(attributes, data)) == (attributes, data)


@_NO_DEADLINE
@given(_guid, _times, st.integers(0, 2**64 - 1), st.booleans(), _guid)
def test_capsule_result_round_trip(
    guid: str, stamp: efi.EfiTime, status: int, with_fmp: bool, image: str
) -> None:
    result = efi.CapsuleResult(guid, stamp, status, (1, 0, 1, image) if with_fmp else None)
    assert efi.CapsuleResult.unpack(result.pack()) == result


@_NO_DEADLINE
@given(st.binary(max_size=300))
def test_capsule_walk_never_crashes(data: bytes) -> None:
    """Any bytes either parse or raise CapsuleError, never anything else."""
    with contextlib.suppress(cap.CapsuleError):
        efi.inspect_capsule(data, (SYSTEM,))


@_NO_DEADLINE
@given(st.binary(max_size=200))
def test_device_path_and_update_info_decoders_only_raise_value_error(data: bytes) -> None:
    for decode in (efi.decode_device_path, efi.UpdateInfo.unpack, efi.LoadOption.unpack):
        with contextlib.suppress(ValueError):
            decode(data)
