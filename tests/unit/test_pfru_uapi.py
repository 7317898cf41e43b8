"""Golden values of the PFRU/PFRT uAPI, independent of the code.

From include/uapi/linux/pfrut.h (ioctl numbers, struct layouts), drivers/acpi/pfr_update.c
and pfr_telemetry.c (GUIDs, revisions, log levels and types).
"""

import struct
import uuid

import pytest

from livefw.kernel.sim.pfru_capsule import build_capsule
from livefw.kernel.uapi import capsule
from livefw.kernel.uapi import pfru as uapi


def test_ioctl_numbers_match_the_spec_table() -> None:
    assert uapi.PFRU_IOC_SET_REV == 0x4004EE01
    assert uapi.PFRU_IOC_STAGE == 0x4004EE02
    assert uapi.PFRU_IOC_ACTIVATE == 0x4004EE03
    assert uapi.PFRU_IOC_STAGE_ACTIVATE == 0x4004EE04
    assert uapi.PFRU_IOC_QUERY_CAP == 0x805CEE05
    assert uapi.PFRT_LOG_IOC_SET_INFO == 0x400CEE06
    assert uapi.PFRT_LOG_IOC_GET_INFO == 0x800CEE07
    assert uapi.PFRT_LOG_IOC_GET_DATA_INFO == 0x8040EE08


def test_struct_sizes_match_gcc() -> None:
    assert uapi.CAP_INFO.size == 92
    assert uapi.COM_BUF_INFO.size == 32
    assert uapi.PAYLOAD_HDR.size == 40
    assert uapi.LOG_INFO.size == 12
    assert uapi.LOG_DATA_INFO.size == 64
    assert uapi.UPDATED_RESULT.size == 40
    assert capsule.CAPSULE_HEADER.size == 28
    assert capsule.FMP_CAPSULE_HEADER.size == 8
    assert capsule.FMP_IMAGE_HEADER_SIZES == {1: 32, 2: 40, 3: 48}
    assert capsule.IMAGE_AUTH.size == 32


def test_field_offsets() -> None:
    # pfru_update_cap_info: platform_id at 56, oem_info_len at 88 (pfrut.h)
    raw = uapi.UpdateCapInfo(
        status=0,
        update_cap=0,
        code_type=str(uuid.UUID(int=0)),
        fw_version=0,
        code_rt_version=0,
        drv_type=str(uuid.UUID(int=0)),
        drv_rt_version=0,
        drv_svn=0x11223344,
        platform_id=str(uuid.UUID(int=0)),
        oem_id=str(uuid.UUID(int=0)),
        oem_info_len=0xAABBCCDD,
    ).pack()
    assert raw[52:56] == bytes.fromhex("44332211")
    assert raw[88:92] == bytes.fromhex("ddccbbaa")
    # pfrt_log_data_info: max_data_size at 40, reset_cnt at 56, 4 bytes tail padding
    info = uapi.LogDataInfo(0, 0, 0x1_0000_2000, 0x3_0000_4000, 0x55, 1, 2, 3, 0x66).pack()
    assert struct.unpack_from("<Q", info, 8)[0] == 0x2000  # chunk1_addr_lo
    assert struct.unpack_from("<Q", info, 16)[0] == 0x1  # chunk1_addr_hi
    assert struct.unpack_from("<Q", info, 24)[0] == 0x4000
    assert struct.unpack_from("<Q", info, 32)[0] == 0x3
    assert struct.unpack_from("<I", info, 40)[0] == 0x55
    assert struct.unpack_from("<I", info, 56)[0] == 0x66
    assert info[60:] == bytes(4)
    # pfru_payload_hdr: platform_id at 20, svn_ver at 36
    header = uapi.PayloadHeader(1, 2, 40, 4, 5, str(uuid.UUID(int=0)), 0x77).pack()
    assert struct.unpack_from("<I", header, 16)[0] == 5
    assert struct.unpack_from("<I", header, 36)[0] == 0x77


def test_constants() -> None:
    assert uapi.UPDATE_NODE == "dev/acpi_pfr_update0"
    assert uapi.TELEMETRY_NODE == "dev/acpi_pfr_telemetry0"
    assert uapi.UPDATE_MISC == "sys/class/misc/pfru0"
    assert uapi.TELEMETRY_MISC == "sys/class/misc/pfrt0"
    assert [int(level) for level in uapi.LogLevel] == [0, 1, 2, 4]
    assert [int(t) for t in uapi.LogType] == [0, 1]
    assert [int(s) for s in uapi.DsmStatus] == [0, 1, 2, 3, 4, 5, 6]
    assert int(uapi.UpdateType.CODE_INJECTION) == 1
    assert int(uapi.UpdateType.DRIVER_UPDATE) == 2


def test_guid_byte_order_is_efi() -> None:
    # the code-injection GUID's bytes as pfrut -q prints them raw
    # (tools/power/acpi/tools/pfrut/pfrut.c print_cap(): uuid_unparse() of the array)
    raw = capsule.guid_to_efi(uapi.CODE_INJECTION_GUID)
    assert str(uuid.UUID(bytes=raw)) == "794bf8b2-6e7b-454e-885f-3fb9bb185402"
    cap = uapi.UpdateCapInfo.unpack(bytes(8) + raw + bytes(uapi.CAP_INFO.size - 8 - 16))
    assert cap.code_type == "b2f84b79-7b6e-4e45-885f-3fb9bb185402"


def _capsule(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "image_type": uapi.CODE_INJECTION_GUID,
        "rt_ver": 9,
        "svn_ver": 0,
        "platform_id": "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    }
    args.update(overrides)
    return build_capsule(**args)  # type: ignore[arg-type]


def test_walk_finds_the_payload_where_the_kernel_does() -> None:
    data = _capsule()
    walked = uapi.walk_capsule(data)
    assert walked.update_type == uapi.UpdateType.CODE_INJECTION
    # kernel: HeaderSize + 8 + 8*(drivers+payloads), image header v2 (40), 8 + dwLength
    header_size = struct.unpack_from("<I", data, 16)[0]
    image_at = header_size + 8 + 8
    assert walked.image_offset == image_at
    dw_length = struct.unpack_from("<I", data, image_at + 40 + 8)[0]
    assert walked.payload_offset == image_at + 40 + 8 + dw_length
    assert walked.payload.rt_ver == 9
    assert walked.payload.platform_id == "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


@pytest.mark.parametrize("version", [1, 2])
def test_walk_accepts_image_header_v1_and_v2(version: int) -> None:
    walked = uapi.walk_capsule(_capsule(header_version=version))
    assert walked.image.size == {1: 32, 2: 40}[version]


def test_walk_refuses_v3_wrong_type_and_truncation() -> None:
    with pytest.raises(capsule.CapsuleError, match="version 3"):
        uapi.walk_capsule(_capsule(header_version=3))
    with pytest.raises(capsule.CapsuleError, match="neither PFRU"):
        uapi.walk_capsule(_capsule(image_type="11111111-2222-4333-8444-555555555555"))
    data = _capsule()
    for cut in (0, 10, 27, 40, 60, 100, len(data) - 1):
        with pytest.raises(capsule.CapsuleError):
            uapi.walk_capsule(data[:cut])


def test_walk_refuses_a_dwlength_that_points_outside_the_image() -> None:
    data = bytearray(_capsule())
    walked = uapi.walk_capsule(bytes(data))
    struct.pack_into("<I", data, walked.auth_offset + 8, 0x7FFFFFF0)
    with pytest.raises(capsule.CapsuleError):
        uapi.walk_capsule(bytes(data))
